"""The training loop: config in, trained model, metrics, checkpoints and a summary out.

:func:`train` wires everything together:

1. data: ``convjax.data.make_loaders`` gives this process's train iterator (checkpointable
   grain iterator), the eval loader (padded last batch + mask) and the dataset info;
2. model: ``convjax.models.build(config.model, ..., axis_name="batch")`` with the
   padding / pool / norm / conv switches, split into a functional train state;
3. two optimizers (task over ``nnx.Param``, padding over ``PadParam``) and one per-device
   step compiled with ``jax.pmap`` or ``jax.shard_map`` (``config.parallel``);
4. restore the newest checkpoint in ``<workdir>/checkpoints`` if there is one (exact resume:
   state, both optimizer states, statistics, data-iterator position, RNG);
5. train with a progress bar, JSON-lines metrics, periodic evaluation and checkpoints;
   final evaluation on the test split and a summary (also ``<workdir>/summary.json``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax._checks import check_choice
from convjax.train.checkpoint import Checkpointer
from convjax.train.distributed import DataParallel, is_primary, setup_distributed
from convjax.train.metrics import Averager, MetricsWriter
from convjax.train.optim import make_padding_optimizer, make_task_optimizer, param_labels
from convjax.train.state import TrainState, create_train_state, split_model
from convjax.train.step import make_eval_step, make_train_step

#: Compute dtypes accepted by ``config.dtype``.
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

#: ``hook(step, train_loop_state)`` called after every train step (e.g. to stop early).
Hook = Callable[[int, Any], None]


def _get(config: Any, name: str, default: Any) -> Any:
    value = config.get(name, default) if hasattr(config, "get") else default
    return default if value is None else value


def _to_dict(value: Any) -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return dict(value)


def compute_dtype(name: str) -> Any:
    """``config.dtype`` name -> compute dtype (``None`` for float32: the input dtype)."""
    check_choice(name, tuple(DTYPES), "config.dtype")
    return DTYPES[name]


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def evaluate(
    dp: DataParallel, eval_step: Callable, state: Any, batches: Iterable[dict]
) -> dict[str, float]:
    """Loss and accuracy over every real example of ``batches`` (all processes together).

    Returns ``{"loss", "accuracy", "count"}``; padded examples (``mask == 0``) are ignored.
    """
    totals: dict[str, Any] | None = None
    for batch in batches:
        sums = eval_step(state, dp.shard_batch(batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the evaluation split produced no batches.")
    host = dp.metrics_to_host(totals)
    count = max(host["count"], 1.0)
    return {
        "loss": host["loss_sum"] / count,
        "accuracy": host["correct"] / count,
        "count": host["count"],
    }


def build_model(config: Any, *, num_classes: int, in_features: int) -> nnx.Module:
    """``convjax.models.build`` from the config's model name, switches and ``model_kwargs``."""
    from convjax.models import build

    conv = _get(config, "conv", "") or None
    return build(
        config.model,
        num_classes=num_classes,
        in_features=in_features,
        padding=_get(config, "padding", "zero"),
        pool=_get(config, "pool", "max"),
        norm=_get(config, "norm", "batch"),
        conv=conv,
        axis_name="batch",
        dtype=compute_dtype(_get(config, "dtype", "float32")),
        rngs=nnx.Rngs(params=int(config.seed), dropout=int(config.seed) + 1),
        **_to_dict(_get(config, "model_kwargs", {})),
    )


def make_data(config: Any) -> Any:
    """This process's ``Loaders(train, eval, info)`` from ``config.data``/``config.dataset``."""
    from convjax.data import make_loaders

    dataset = _get(config, "dataset", "") or None
    return make_loaders(
        config.data,
        seed=int(config.seed),
        global_batch_size=int(config.batch_size),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        dataset=dataset,
    )


def train(
    config: Any,
    workdir: str | None = None,
    *,
    loaders: Sequence[Any] | None = None,
    hooks: Sequence[Hook] = (),
) -> dict[str, Any]:
    """Train ``config`` to completion (resuming from ``<workdir>/checkpoints`` if present).

    Args:
      config: an ml_collections config (see ``convjax/configs/default.py`` for every field).
      workdir: output directory; default ``config.workdir``. Holds ``metrics.jsonl``,
        ``summary.json``, ``checkpoints/`` and (optionally) ``tb/``.
      loaders: ``(train_iterator, eval_iterable, info)`` to use instead of
        ``convjax.data.make_loaders`` (tests pass in-memory data). ``info`` needs
        ``num_classes``, ``input_shape`` and ``steps_per_epoch``.
      hooks: ``hook(step, state)`` after every step (``state`` is the device train state);
        an exception raised by a hook aborts the run like a crash would.

    Returns:
      The summary: ``test_accuracy``, ``test_loss``, ``steps``, ``num_params``,
      ``train_time_s``, ``examples_per_s``, ... plus ``"state"``: the final host
      :class:`TrainState`.

    Example:
      >>> from convjax.configs import default
      >>> summary = train(default.get_config(), "runs/default")
      >>> summary["test_accuracy"] > 0.9
      True
    """
    t_start = time.perf_counter()
    # Multi-process if config.distributed or JAX_COORDINATOR_ADDRESS/... ask for it.
    setup_distributed(_get(config, "distributed", {}))
    workdir = os.path.abspath(workdir or config.workdir)
    primary = is_primary()
    dp = DataParallel(_get(config, "parallel", "pmap"))
    dtype = compute_dtype(_get(config, "dtype", "float32"))

    train_iter, eval_batches, info = loaders if loaders is not None else make_data(config)
    local_batch = int(config.batch_size) // jax.process_count()
    dp.check_batch_size(local_batch, "batch size (config.batch_size / process_count)")
    num_steps = int(_get(config, "num_steps", 0))
    if num_steps <= 0:
        num_steps = int(_get(config, "num_epochs", 1)) * int(info.steps_per_epoch)
    if num_steps <= 0:
        raise ValueError(
            f"config.num_steps ({_get(config, 'num_steps', 0)}) or config.num_epochs * "
            f"steps per epoch ({info.steps_per_epoch}) must give at least one step."
        )

    model = build_model(
        config, num_classes=int(info.num_classes), in_features=int(info.input_shape[-1])
    )
    model_def, params, pad_params, stats, param_state = split_model(model)
    del model
    tx_task, schedule = make_task_optimizer(config.optimizer, param_labels(param_state), num_steps)
    tx_pad = make_padding_optimizer(_get(config, "padding_optimizer", {}))
    state = create_train_state(params, pad_params, stats, tx_task, tx_pad, int(config.seed))

    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=int(_get(config, "keep_checkpoints", 2)),
        enabled=primary,
    )
    resumed_from = None
    if _get(config, "resume", True):
        restored = checkpointer.restore(state)
        if restored is not None:
            state, data_state = restored
            if data_state is not None:
                train_iter.set_state(data_state)
            resumed_from = int(state.step)
    start = int(state.step)

    train_step = dp.compile(
        make_train_step(
            model_def,
            tx_task,
            tx_pad,
            schedule=schedule,
            axis_name=dp.axis_name,
            compute_dtype=dtype,
            aliasing_weight=float(_get(config, "aliasing_weight", 1.0)),
        ),
        donate_state=True,
    )
    eval_step = dp.compile(make_eval_step(model_def, axis_name=dp.axis_name, compute_dtype=dtype))
    writer = MetricsWriter(workdir, enabled=primary, tensorboard=_get(config, "tensorboard", False))
    num_params = count_params(state.params)
    num_pad_params = count_params(state.pad_params)
    if primary:
        os.makedirs(workdir, exist_ok=True)
        print(
            f"convjax: model {config.model} ({num_params:,} params"
            + (f" + {num_pad_params:,} padding params" if num_pad_params else "")
            + f", padding={config.padding}, "
            f"pool={config.pool}, norm={config.norm}, conv={_get(config, 'conv', '') or 'default'}"
            f"), {dp.num_devices} x {jax.devices()[0].platform} device(s) via {dp.backend}, "
            f"batch {config.batch_size}, {num_steps} steps"
            + (f", resumed at step {resumed_from}" if resumed_from is not None else "")
            + f"; workdir {workdir}",
            flush=True,
        )
        from convjax.data import describe_data  # the dataset line: source, flip, statistics

        print(f"convjax: {describe_data(info)}", flush=True)

    dstate = dp.replicate(state)
    log_every = max(int(_get(config, "log_every", 10)), 1)
    eval_every = int(_get(config, "eval_every", 0))
    ckpt_every = int(_get(config, "checkpoint_every", 0))
    averager = Averager()
    progress = _progress_bar(
        num_steps, start, enabled=primary and _get(config, "progress", True), primary=primary
    )
    t_loop = time.perf_counter()
    last_eval: dict[str, float] = {}
    try:
        for step in range(start, num_steps):
            batch = next(train_iter)
            dstate, metrics = train_step(dstate, dp.shard_batch(batch))
            averager.add(metrics)
            done = step + 1
            if done % log_every == 0 or done == num_steps:
                values = averager.result()
                values["time_s"] = time.perf_counter() - t_start
                writer.write(done, "train", values)
                progress.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['accuracy']:.3f}")
            if eval_every > 0 and done % eval_every == 0 and done != num_steps:
                last_eval = evaluate(dp, eval_step, dstate, eval_batches)
                writer.write(done, "test", last_eval)
                progress.write(
                    f"step {done}: test accuracy {last_eval['accuracy']:.4f}, "
                    f"loss {last_eval['loss']:.4f}"
                )
            if (ckpt_every > 0 and done % ckpt_every == 0) or done == num_steps:
                checkpointer.save(done, dp.unreplicate(dstate), train_iter.get_state())
            progress.update(1)
            for hook in hooks:
                hook(done, dstate)
    except BaseException:
        # A crash (or kill) between checkpoints: release the writers, keep the checkpoints.
        progress.close()
        writer.close()
        checkpointer.close()
        raise
    progress.close()
    train_time = time.perf_counter() - t_loop

    final = evaluate(dp, eval_step, dstate, eval_batches)
    writer.write(num_steps, "test", final)
    host_state: TrainState = dp.unreplicate(dstate)
    steps_run = num_steps - start
    summary: dict[str, Any] = {
        "model": config.model,
        "dataset": _get(config, "dataset", ""),
        "steps": num_steps,
        "steps_this_run": steps_run,
        "resumed_from": resumed_from,
        "num_params": num_params,
        "num_padding_params": num_pad_params,
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "test_examples": int(final["count"]),
        "train_time_s": train_time,
        "examples_per_s": steps_run * int(config.batch_size) / max(train_time, 1e-9),
        "total_time_s": time.perf_counter() - t_start,
        "devices": dp.num_devices,
        "backend": dp.backend,
    }
    if primary:
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        print(
            f"convjax: done. {num_steps} steps, test accuracy {final['accuracy']:.4f} "
            f"({int(final['count'])} examples), test loss {final['loss']:.4f}, "
            f"train time {train_time:.1f} s, total {summary['total_time_s']:.1f} s",
            flush=True,
        )
    writer.close()
    checkpointer.close()
    summary["state"] = host_state
    return summary


class _NoBar:
    """Stands in for the progress bar: no bar, but eval lines still printed if ``echo``."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def write(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, *, enabled: bool, primary: bool) -> Any:
    if not enabled:
        return _NoBar(echo=primary)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


__all__ = [
    "DTYPES",
    "build_model",
    "compute_dtype",
    "count_params",
    "evaluate",
    "make_data",
    "train",
]
