"""The README's `convjax.convert` examples (NNX and Linen), read from README.md and run."""

import jax
import numpy as np
from flax import nnx

from convjax.nnx import PadParam
from tests.train.test_readme_snippets import _run


def _moved(before, after) -> bool:
    pairs = zip(jax.tree.leaves(before), jax.tree.leaves(after))
    return any(not np.array_equal(a, b) for a, b in pairs)


def test_readme_convert_nnx_example_trains_params_and_padding(capsys):
    ns = _run("convert-nnx")
    out = capsys.readouterr().out
    assert "conv: nnx.Conv(3x3 zero) -> Conv(3x3 learned)" in out and "-> soft" in out
    model, fresh = ns["model"], ns["PlainCNN"](nnx.Rngs(0))
    assert _moved(nnx.state(fresh, nnx.Param), nnx.state(model, nnx.Param))
    pad = nnx.state(model, PadParam)
    assert jax.tree.leaves(pad) and any(np.any(v != 0) for v in jax.tree.leaves(pad))
    assert int(ns["opt"].step[...]) == 3 and int(ns["opt_pad"].step[...]) == 3


def test_readme_convert_linen_example_trains_params_and_padding():
    ns = _run("convert-linen")
    start = ns["linen_trainable"](ns["variables"])
    assert _moved(start["params"], ns["trainable"]["params"])
    assert _moved(start["padding"], ns["trainable"]["padding"])
