"""Shared helpers of the trainer tests: tiny real models, a fixed batch, tree comparisons."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

import convjax.nnx as cnn
from convjax.models import build
from convjax.train.optim import make_padding_optimizer, make_task_optimizer, param_labels
from convjax.train.state import create_train_state, split_model
from convjax.train.step import make_train_step


def tiny_model(
    *,
    padding: str = "zero",
    pool: str = "max",
    norm: str = "batch",
    conv: str = "standard",
    dropout: float = 0.0,
    seed: int = 0,
    name: str = "digits_cnn",
    axis_name: str | None = "batch",
    **kwargs: Any,
) -> nnx.Module:
    """A digits_cnn with one stage of width 4 (8x8x1 -> 10 logits), synced over "batch"."""
    kwargs.setdefault("widths", (4,))
    return build(
        name,
        num_classes=10,
        in_features=1,
        padding=padding,
        pool=pool,
        norm=norm,
        conv=conv,
        axis_name=axis_name,
        dropout=dropout,
        rngs=nnx.Rngs(params=seed, dropout=seed + 1),
        **kwargs,
    )


class MixedNet(nnx.Module):
    """Every kind of state in one tiny net: learned padding (PadParam + padding loss),
    BatchNorm statistics and deconvolution statistics (DeconvStat), all synced over
    ``axis_name``. ``(N, 8, 8, 1) -> (N, 10)``."""

    def __init__(self, *, axis_name: str | None = "batch", seed: int = 0) -> None:
        rngs = nnx.Rngs(seed)
        self.conv = cnn.Conv(1, 4, 3, padding_mode="learned", use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(4, axis_name=axis_name, rngs=rngs)
        self.deconv = cnn.DeconvConv(4, 6, 3, sampling_stride=1, axis_name=axis_name, rngs=rngs)
        self.head = nnx.Linear(6, 10, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        h = nnx.relu(self.deconv(h))
        return self.head(h.mean(axis=(1, 2)))


def fixed_batch(n: int = 16, size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """A random global batch of 8x8x1 images and labels in [0, 10)."""
    rs = np.random.RandomState(seed)
    return {
        "image": rs.randn(n, size, size, 1).astype(np.float32),
        "label": rs.randint(0, 10, n).astype(np.int32),
    }


def make_setup(
    model: nnx.Module,
    *,
    optimizer: dict | None = None,
    padding_optimizer: dict | None = None,
    num_steps: int = 10,
    seed: int = 0,
):
    """``(model_def, initial host state, per-device train step, labels)`` for ``model``."""
    optimizer = {
        "warmup_steps": 0,
        **(optimizer or dict(name="sgd", learning_rate=0.1, momentum=0.9)),
    }
    padding_optimizer = padding_optimizer or dict(name="sgd", learning_rate=0.1, momentum=0.9)
    model_def, params, pad_params, stats, param_state = split_model(model)
    labels = param_labels(param_state)
    tx, schedule = make_task_optimizer(optimizer, labels, num_steps)
    tx_pad = make_padding_optimizer(padding_optimizer)
    state = create_train_state(params, pad_params, stats, tx, tx_pad, seed)
    step = make_train_step(model_def, tx, tx_pad, schedule=schedule)
    return model_def, state, step, labels


def run(dp, step, state, batches):
    """Run ``step`` over ``batches`` with DataParallel ``dp``; host state and last metrics."""
    fn = dp.compile(step)
    dstate = dp.replicate(state)
    metrics = None
    for batch in batches:
        dstate, metrics = fn(dstate, dp.shard_batch(batch))
    return dp.unreplicate(dstate), dp.metrics_to_host(metrics)


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two pytrees of arrays (same structure)."""
    diffs = jax.tree.map(
        lambda x, y: (
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            if np.size(x)
            else 0.0
        ),
        a,
        b,
    )
    return max(jax.tree.leaves(diffs), default=0.0)


def trees_equal(a: Any, b: Any) -> bool:
    """Bitwise equality of two pytrees of arrays (same structure)."""
    eq = jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    return all(jax.tree.leaves(eq))
