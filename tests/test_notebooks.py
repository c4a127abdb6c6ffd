"""Execute every notebook in notebooks/ top to bottom; any cell error fails the test.

``CONVJAX_WRITE_NOTEBOOKS=1 pytest tests/test_notebooks.py`` also writes each executed notebook
back (outputs included), so the committed notebooks show the plots of this same execution.
"""

import os
import pathlib

import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


#: Notebooks whose execution takes over a minute on 2 CPU cores (it trains five models):
#: run with ``-m slow``; tests/convert covers what it shows.
SLOW_NOTEBOOKS = {"convert"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=[pytest.mark.slow] if p.stem in SLOW_NOTEBOOKS else [])
        for p in NOTEBOOKS
    ],
    ids=[p.stem for p in NOTEBOOKS],
)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel is a fresh process: it gets one CPU device unless a notebook asks for more.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("CONVJAX_NOTEBOOK_TEST", "1")  # notebooks may shorten long loops
    monkeypatch.setenv("XLA_FLAGS", "")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    assert all(
        out.get("output_type") != "error"
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert os.environ.get("CONVJAX_NOTEBOOK_TEST") == "1"
    if os.environ.get("CONVJAX_WRITE_NOTEBOOKS") == "1":
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)  # no timestamps in the diff
        nbformat.write(nb, path)


# ---------------------------------------------------------------- the install cell (Colab)


def _install_cell() -> str:
    import json

    sources = {
        "".join(json.loads(p.read_text(encoding="utf-8"))["cells"][0]["source"]) for p in NOTEBOOKS
    }
    assert len(sources) == 1, "every notebook starts with the same install cell"
    (source,) = sources
    assert 'CONVJAX_SOURCE = ".."' in source
    return source


def _run_install_cell(monkeypatch, cwd, source=None):
    """Execute the install cell as if convjax were not importable; returns the pip targets it
    would install (pip itself is not run)."""
    import importlib.util
    import subprocess

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "convjax" else find_spec(name, *a),
    )
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, *a, **k: calls.append(cmd) or 0)
    monkeypatch.chdir(cwd)
    exec(compile(source or _install_cell(), "install-cell", "exec"), {"__name__": "cell"})  # noqa: S102
    return [cmd[-1] for cmd in calls]


def test_install_cell_outside_a_clone_prints_one_line(tmp_path, monkeypatch, capsys):
    assert _run_install_cell(monkeypatch, tmp_path) == []  # no pip traceback: pip never runs
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "is not a convjax clone: set CONVJAX_SOURCE" in out[0], out
    assert "git+https://github.com/" in out[0]


def test_install_cell_in_a_clone_installs_the_colab_extra(monkeypatch, capsys):
    import tomllib

    (target,) = _run_install_cell(monkeypatch, NOTEBOOK_DIR)
    root = str(NOTEBOOK_DIR.parent)
    assert target.startswith(f"{root}[colab") and "notebooks" not in target
    assert capsys.readouterr().out.startswith(f"installed {target}")
    url = "git+https://example.org/convjax.git"
    source = _install_cell().replace('CONVJAX_SOURCE = ".."', f"CONVJAX_SOURCE = {url!r}")
    (target,) = _run_install_cell(monkeypatch, NOTEBOOK_DIR, source)
    assert target.startswith("convjax[colab") and target.endswith(f"] @ {url}")
    # The colab extra holds what the notebooks import, without jupyterlab; notebooks adds it.
    pyproject = tomllib.loads((NOTEBOOK_DIR.parent / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert not any("jupyterlab" in d for d in extras["colab"])
    assert "convjax[colab]" in extras["notebooks"]
    assert any(d.startswith("jupyterlab") for d in extras["notebooks"])
