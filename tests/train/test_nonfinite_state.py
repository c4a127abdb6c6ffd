"""A diverging run is never reported as done: the non-finite check covers the train loss,
the gradient norm and the whole state (parameters, statistics, optimizer states), and the
checkpoint the error names evaluates finite (float16: a finite checkpoint whose weights
overflow the forward pass is moved aside)."""

from __future__ import annotations

import math
import os
import re

import jax.numpy as jnp
import pytest

from convjax.__main__ import main
from convjax.train.inference import evaluate_workdir, restore_run
from convjax.train.step import all_finite


def test_all_finite_is_one_flag_over_every_float_leaf():
    good = {"w": jnp.ones((2, 3)), "n": jnp.asarray(3, jnp.int32)}
    assert bool(all_finite(good, {}))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        assert not bool(all_finite(good, {"b": jnp.asarray([0.0, bad], jnp.float16)}))
    # No overflow: huge finite values are finite (a sum of squares would say inf).
    assert bool(all_finite({"w": jnp.full((4,), 3e38, jnp.float32)}))


PATTERN = re.compile(
    r"convjax: error: (the train loss|the gradient norm|the model state \(.*\)) is (nan|inf|-inf"
    r"|not finite) at step \d+; the run stopped and (the last good checkpoint \(step \d+\) is "
    r"kept|no good checkpoint was written yet)"
)


@pytest.mark.parametrize("dtype, every", [("float32", 2), ("float16", 1)])
def test_diverging_run_stops_and_keeps_only_finite_checkpoints(tmp_path, capsys, dtype, every):
    """The issue's reproduction (SGD at learning rate 1e6, no normalisation) on digits_cnn:
    before, it printed "done" and exited 0 with NaN parameters."""
    workdir = tmp_path / "run"
    status = main(
        [
            "convjax", "train", "--config=default", "--config.model_kwargs.widths=(4, 8)",
            "--config.num_steps=40", f"--config.checkpoint_every={every}",
            "--config.eval_every=10", "--config.optimizer.name=sgd",
            "--config.optimizer.learning_rate=1e6", "--config.optimizer.warmup_steps=0",
            "--config.norm=none", f"--config.dtype={dtype}", "--config.progress=False",
            f"--workdir={workdir}",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and PATTERN.match(err[0]), err
    assert not (workdir / "summary.json").exists()
    steps = [n for n in os.listdir(workdir / "checkpoints") if n.isdigit()]
    for step in steps:  # every checkpoint left is finite and evaluates finite
        state = restore_run(str(workdir), int(step))[3]
        assert bool(all_finite(state.params, state.stats, state.opt_task))
        assert math.isfinite(evaluate_workdir(str(workdir), step=int(step), write=False)["loss"])
    if dtype == "float16":  # step 1 holds finite numbers that overflow a float16 forward pass
        assert "(step 1 evaluates to a non-finite loss: moved to checkpoints/nonfinite-1)" in err[0]
        assert (workdir / "checkpoints" / "nonfinite-1").is_dir() and not steps
