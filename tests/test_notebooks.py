"""Execute every notebook in notebooks/ top to bottom; any cell error fails the test.

``CONVJAX_WRITE_NOTEBOOKS=1 pytest tests/test_notebooks.py`` also writes each executed notebook
back (outputs included), so the committed notebooks show the plots of this same execution.
"""

import os
import pathlib

import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
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
