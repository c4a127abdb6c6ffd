"""The README's two-optimizer train steps (NNX and Linen), read from README.md and run, so
they cannot drift from the code."""

import pathlib
import re

import jax
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def snippet(name: str) -> str:
    """The ```python block right after ``<!-- readme-test: name -->`` in README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- readme-test: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.DOTALL
    )
    assert match, f"README.md has no snippet {name!r}"
    return match.group(1)


def _run(name):
    namespace = {"__name__": f"readme_{name.replace('-', '_')}"}
    exec(compile(snippet(name), f"README.md:{name}", "exec"), namespace)  # noqa: S102
    return namespace


def test_nnx_two_optimizer_step_trains_params_and_padding(capsys):
    from flax import nnx

    from convjax.nnx import PadParam

    ns = _run("nnx-two-optimizers")
    assert "total" in capsys.readouterr().out
    model, MyNet = ns["model"], ns["MyNet"]
    fresh = MyNet(nnx.Rngs(0))  # the same initialisation, untrained
    for kind in (nnx.Param, PadParam):
        before = jax.tree.leaves(nnx.state(fresh, kind))
        after = jax.tree.leaves(nnx.state(model, kind))
        assert before and len(before) == len(after)
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), kind
    assert float(ns["total"]) > float(ns["task_loss"]) > 0.0  # padding losses included
    assert int(ns["opt_task"].step[...]) == 3 and int(ns["opt_pad"].step[...]) == 3


def test_linen_two_optimizer_step_trains_params_and_padding(capsys):
    ns = _run("linen-two-optimizers")
    assert "total" in capsys.readouterr().out
    init = ns["model"].init(jax.random.key(0), ns["x"])
    assert "losses" in init and set(init) - {"losses"} == {"params", "padding"}
    for name in ("params", "padding"):
        before, after = jax.tree.leaves(init[name]), jax.tree.leaves(ns[name])
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), name
    assert float(ns["total"]) > float(ns["task_loss"]) > 0.0


@pytest.mark.parametrize("name", ["nnx-two-optimizers", "linen-two-optimizers"])
def test_snippets_are_complete_programs(name):
    code = snippet(name)
    assert code.startswith("import ") and "def train_step" in code
