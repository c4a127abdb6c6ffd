"""The training loop: config in, trained model, metrics, checkpoints and a summary out.

:func:`train` is three steps, each usable on its own:

1. :func:`setup` -- take the run's :class:`~convjax.train.spec.TrainSpec` (a config or
   mapping is resolved once here, :func:`convjax.train.config.resolve_spec`), build the data
   (``convjax.data.make_loaders``), then
   (:func:`convjax.train.factory.make_train_setup`) the model (``convjax.models.build`` with
   the padding / pool / norm / conv switches, split into a functional train state), two
   optimizers (task over ``nnx.Param``, padding over ``PadParam``) and the per-device steps,
   compiled with ``jax.pmap`` or ``jax.shard_map``;
   lock the workdir (:mod:`convjax.train.workdir_lock`: one trainer per workdir); restore
   the newest intact checkpoint in ``<workdir>/checkpoints`` (exact resume) after checking
   that the stored ``config.json`` describes the same model and data; write ``config.json``,
   ``versions.json`` and ``data_info.json`` (what :func:`convjax.train.load_model` needs);
2. :func:`run_loop` -- the steps, with a progress bar on a terminal (one log line every
   ``log_every`` steps otherwise), JSON-lines metrics, periodic evaluation and checkpoints;
   a non-finite train loss, gradient norm, model state or eval metric stops the run
   (:class:`NonFiniteError`); SIGINT (Ctrl-C) or SIGTERM saves the step reached and raises
   :class:`TrainingInterrupted` (:mod:`convjax.train.preemption`);
3. :func:`finish` -- final evaluation on the test split and the summary
   (also ``<workdir>/summary.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import version
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from convjax.data import describe_data, make_loaders
from convjax.models.registry import model_source
from convjax.models.spec import is_import_path
from convjax.train.checkpoint import Checkpointer, CheckpointError
from convjax.train.config import (
    ConfigError,
    compare_configs,
    config_to_json,
    describe_changes,
    resolve_spec,
)
from convjax.train.distributed import (
    DataParallel,
    is_primary,
    setup_distributed,
    xla_compiler_options,
)
from convjax.train.factory import (
    DTYPES,
    build_model,
    compute_dtype,
    count_params,
    make_optimizers,
    make_train_setup,
)
from convjax.train.metrics import Averager, MetricsWriter
from convjax.train.preemption import StopRequest, signal_name
from convjax.train.spec import TrainSpec
from convjax.train.state import ModelDef, TrainState
from convjax.train.workdir_lock import WorkdirLock
from convjax.train.workdir_lock import acquire as acquire_workdir_lock

#: ``hook(step, train_loop_state)`` called after every train step (e.g. to stop early).
Hook = Callable[[int, Any], None]

#: Files :func:`setup` writes into the workdir.
CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"
DATA_INFO_FILE = "data_info.json"
#: Written when the model was registered outside convjax (``convjax.models.register``, e.g. in
#: a config file): where to re-run that registration (:func:`convjax.models.load_model_source`).
MODEL_SOURCE_FILE = "model_source.json"


class NonFiniteError(RuntimeError):
    """A train loss or evaluation metric was NaN/inf; the message says where and what to try."""


class ConfigMismatchError(ConfigError):
    """Resuming a workdir whose stored config differs in fields that change the model/data."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: ``step`` (completed steps), ``checkpoint_step``
    (or None) and ``signum`` (the signal the run stopped for after saving ``step``, or None
    for an immediate stop, e.g. a second Ctrl-C)."""

    def __init__(self, step: int, checkpoint_step: int | None, signum: int | None = None) -> None:
        self.step = step
        self.checkpoint_step = checkpoint_step
        self.signum = signum
        if signum is not None and checkpoint_step == step:
            text = (
                f"interrupted by {signal_name(signum)} at step {step}; saved a checkpoint at "
                f"step {step}; run the same command to resume"
            )
        else:
            where = "none yet" if checkpoint_step is None else f"at step {checkpoint_step}"
            text = (
                f"interrupted at step {step}; last checkpoint {where}; run the same command "
                "to resume"
            )
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0])


def eval_totals(
    eval_step: Callable, state: Any, batches: Iterable[dict], to_host: Callable = jax.device_get
) -> dict[str, float]:
    """Loss and accuracy over every real example of ``batches``: the one evaluation total
    of the trainer, ``convjax eval`` and ``compare``.

    ``eval_step(state, batch)`` returns the sums ``{"loss_sum", "correct", "count"}`` of a
    batch (padded examples, ``mask == 0``, count zero); ``to_host`` brings the summed totals
    to host floats (``DataParallel.metrics_to_host`` across devices and processes).

    Returns:
      ``{"loss", "accuracy", "count"}`` (means over the counted examples).

    Example:
      >>> eval_totals(lambda s, b: b, None, [{"loss_sum": 2.0, "correct": 1.0, "count": 2.0}])
      {'loss': 1.0, 'accuracy': 0.5, 'count': 2.0}
    """
    totals: dict[str, Any] | None = None
    for batch in batches:
        sums = eval_step(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the evaluation split produced no batches.")
    host = {k: float(np.sum(v)) for k, v in to_host(totals).items()}
    count = max(host["count"], 1.0)
    return {
        "loss": host["loss_sum"] / count,
        "accuracy": host["correct"] / count,
        "count": host["count"],
    }


def evaluate(
    dp: DataParallel, eval_step: Callable, state: Any, batches: Iterable[dict]
) -> dict[str, float]:
    """Loss and accuracy over every real example of ``batches`` (all processes together).

    Returns ``{"loss", "accuracy", "count"}`` (:func:`eval_totals` over the sharded batches).
    """
    sharded = (dp.shard_batch(batch) for batch in batches)
    return eval_totals(eval_step, state, sharded, dp.metrics_to_host)


def make_data(spec: TrainSpec) -> Any:
    """This process's ``Loaders(train, eval, info)`` of ``spec.data``."""
    return make_loaders(
        spec.data,
        seed=spec.run.seed,
        global_batch_size=spec.run.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def versions() -> dict[str, Any]:
    """Versions of python, jax, jaxlib, flax, optax, orbax, convjax and the devices in use."""
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
    }
    for name in ("jaxlib", "orbax.checkpoint", "grain"):
        try:
            module = __import__(name, fromlist=["__version__"])
            out[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            out[name] = None
    try:
        out["convjax"] = version("convjax")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        out["convjax"] = "source"
    devices = jax.devices()
    out["devices"] = {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "processes": jax.process_count(),
    }
    out["written"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _write_json(path: str, payload: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@dataclasses.dataclass
class Run:
    """Everything :func:`setup` builds, read by :func:`run_loop` and :func:`finish`."""

    spec: TrainSpec
    workdir: str
    primary: bool
    dp: DataParallel
    model_def: ModelDef
    state: TrainState
    train_step: Callable
    eval_step: Callable
    train_iter: Any
    eval_batches: Any
    info: Any
    checkpointer: Checkpointer
    writer: MetricsWriter
    schedule: Any
    num_steps: int
    start: int
    resumed_from: int | None
    num_params: int
    num_pad_params: int
    t_start: float
    train_time: float = 0.0
    lock: WorkdirLock | None = None

    def say(self, text: str) -> None:
        """Print ``convjax: text`` on the primary process."""
        if self.primary:
            print(f"convjax: {text}", flush=True)

    def close(self) -> None:
        """Release the metric writers and the checkpoint manager (checkpoints are kept)."""
        self.writer.close()
        self.checkpointer.close()
        if self.lock is not None:
            self.lock.release()


def _check_resume(spec: TrainSpec, workdir: str, checkpointer: Checkpointer) -> dict:
    """Compare the stored config with ``spec``; raise on blocking differences.

    Returns the accepted (resumable) changes, ``{}`` if there is nothing to compare.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not spec.run.resume or checkpointer.latest_step() is None or not os.path.exists(path):
        return {}
    accepted, blocking = compare_configs(_read_json(path), spec)
    if blocking:
        raise ConfigMismatchError(
            f"{workdir} holds a run (checkpoint at step {checkpointer.latest_step()}) with a "
            f"different model/data/optimizer config: {describe_changes(blocking)}. Use a new "
            "--workdir, or the stored values (see its config.json) to resume it."
        )
    return accepted


def setup(
    spec: TrainSpec | Any,
    workdir: str | None = None,
    *,
    loaders: Sequence[Any] | None = None,
    step: int | None = None,
) -> Run:
    """Build everything a run needs; restore the newest checkpoint (see module docstring).

    Args:
      spec: the run's :class:`~convjax.train.spec.TrainSpec`, or a (possibly partial)
        config / mapping, resolved here once (:func:`convjax.train.config.resolve_spec`).
      workdir: output directory (default ``spec.run.workdir``).
      loaders: ``(train_iterator, eval_iterable, info)`` instead of ``make_loaders``.
      step: resume from this checkpoint step (default: the newest intact one); newer steps
        are moved to ``checkpoints/rewound-<step>``.

    Raises:
      ConfigError: a bad or unknown field (naming ``--config.<field>``).
      ConfigMismatchError: resuming with a config that changes the model or the data.

    Example:
      >>> run = setup({"num_steps": 10}, "runs/x")  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    spec = resolve_spec(spec)
    r = spec.run
    # Multi-process if spec.run.distributed or JAX_COORDINATOR_ADDRESS/... ask for it.
    setup_distributed(r.distributed.to_config())
    workdir = os.path.abspath(workdir or r.workdir)
    primary = is_primary()
    # One trainer per workdir (WorkdirLocked names the holder), before anything is written.
    lock = acquire_workdir_lock(workdir, primary=primary)
    dp = DataParallel(r.parallel)
    dtype = compute_dtype(r.dtype)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=r.keep_checkpoints,
        enabled=primary,
    )
    accepted = _check_resume(spec, workdir, checkpointer) if primary else {}

    train_iter, eval_batches, info = loaders if loaders is not None else make_data(spec)
    local_batch = r.batch_size // jax.process_count()
    dp.check_batch_size(local_batch, "batch size (--config.batch_size / process_count)")
    num_steps = r.num_steps or r.num_epochs * int(info.steps_per_epoch)
    if num_steps <= 0:
        raise ConfigError(
            f"--config.num_epochs={r.num_epochs} x {info.steps_per_epoch} steps per "
            "epoch gives no step; set --config.num_steps >= 1"
        )

    built = make_train_setup(
        spec,
        num_classes=int(info.num_classes),
        in_features=int(info.input_shape[-1]),
        num_steps=num_steps,
        axis_name=dp.axis_name,
        input_shape=tuple(info.input_shape),
    )
    state = built.state

    resumed_from = None
    if r.resume:
        restored = checkpointer.restore(state, step)
        if step is not None:
            _say_rewound(primary, step, checkpointer.rewind(step))
        if restored is not None:
            state, data_state = restored
            if data_state is not None:
                train_iter.set_state(data_state)
            resumed_from = int(state.step)
    start = int(state.step)

    options = xla_compiler_options(dtype)
    train_step = dp.compile(built.train_step, donate_state=True, compiler_options=options)
    eval_step = dp.compile(built.eval_step, compiler_options=options)
    writer = MetricsWriter(workdir, enabled=primary, tensorboard=r.tensorboard, keep_until=start)
    run = Run(
        spec=spec,
        workdir=workdir,
        primary=primary,
        dp=dp,
        model_def=built.model_def,
        state=state,
        train_step=train_step,
        eval_step=eval_step,
        train_iter=train_iter,
        eval_batches=eval_batches,
        info=info,
        checkpointer=checkpointer,
        writer=writer,
        schedule=built.schedule,
        num_steps=num_steps,
        start=start,
        resumed_from=resumed_from,
        num_params=built.num_params,
        num_pad_params=built.num_padding_params,
        t_start=t_start,
        lock=lock,
    )
    if primary:
        _write_workdir_files(run)
        _print_header(run, accepted)
    return run


def _say_rewound(primary: bool, step: int, newer: list[int]) -> None:
    if primary and newer:
        print(
            f"convjax: resuming from step {step} as asked (--step); moved the newer checkpoints "
            f"{', '.join(map(str, newer))} to checkpoints/rewound-<step>",
            flush=True,
        )


def _write_workdir_files(run: Run) -> None:
    os.makedirs(run.workdir, exist_ok=True)
    _write_json(os.path.join(run.workdir, CONFIG_FILE), config_to_json(run.spec))
    _write_json(os.path.join(run.workdir, VERSIONS_FILE), versions())
    source = None if is_import_path(run.spec.model.name) else model_source(run.spec.model.name)
    if source is not None:
        _write_json(os.path.join(run.workdir, MODEL_SOURCE_FILE), source)
    info = run.info
    payload = (
        dataclasses.asdict(info)
        if dataclasses.is_dataclass(info)
        else {k: getattr(info, k) for k in ("num_classes", "input_shape") if hasattr(info, k)}
    )
    _write_json(os.path.join(run.workdir, DATA_INFO_FILE), payload)


def _print_header(run: Run, accepted: dict) -> None:
    m, r = run.spec.model, run.spec.run
    pad = f" + {run.num_pad_params:,} padding params" if run.num_pad_params else ""
    unset = "as written" if is_import_path(m.name) else "default"
    switches = ", ".join(f"{s}={getattr(m, s) or unset}" for s in m.honoured_switches)
    run.say(
        f"model {m.name} ({run.num_params:,} params{pad}, {switches}, dtype={r.dtype}), "
        f"{run.dp.num_devices} x "
        f"{jax.devices()[0].platform} device(s) via {run.dp.backend}, batch {r.batch_size}, "
        f"{run.num_steps} steps"
        + (f", resumed at step {run.resumed_from}" if run.resumed_from is not None else "")
    )
    run.say(describe_data(run.info))  # the dataset line: source, flip, statistics
    if accepted:
        run.say(f"resuming with changed fields: {describe_changes(accepted)}")
    run.say(f"workdir {run.workdir} (config.json, versions.json, metrics.jsonl, checkpoints/)")


class _LogLines:
    """The progress report when there is no bar: one line every ``log_every`` steps."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def log(self, step: int, values: dict, steps_per_s: float) -> None:
        left = self.run.num_steps - step
        eta = datetime.timedelta(seconds=round(left / steps_per_s)) if steps_per_s > 0 else "?"
        self.run.say(
            f"step {step}/{self.run.num_steps} loss {values['loss']:.4f} "
            f"acc {values['accuracy']:.3f} lr {values['learning_rate']:.3g} "
            f"{steps_per_s:.2f} steps/s ETA {eta}"
        )

    def write(self, text: str) -> None:
        self.run.say(text)

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """tqdm bar (terminals): postfix with loss / acc / lr; eval lines written above it."""

    def __init__(self, run: Run) -> None:
        self.bar = tqdm(
            total=run.num_steps, initial=run.start, desc="train", unit="step", dynamic_ncols=True
        )

    def log(self, step: int, values: dict, steps_per_s: float) -> None:
        self.bar.set_postfix(
            loss=f"{values['loss']:.4f}",
            acc=f"{values['accuracy']:.3f}",
            lr=f"{values['learning_rate']:.2g}",
        )

    def write(self, text: str) -> None:
        self.bar.write(f"convjax: {text}")

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class _Quiet:
    def log(self, *args: Any) -> None:
        pass

    def write(self, text: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _reporter(run: Run) -> Any:
    if not run.primary:
        return _Quiet()
    if run.spec.run.progress and sys.stdout.isatty():
        return _Bar(run)
    return _LogLines(run)


def _spoiled_checkpoint(run: Run, what: str, step: int) -> int | None:
    """The checkpoint step that a non-finite ``what`` at ``step`` shows to be bad, or None.

    The train loss of step ``t`` is computed with the state of step ``t - 1``: when it is
    non-finite, the checkpoint of step ``t - 1`` (if any) may hold finite numbers that do not
    evaluate finite (e.g. weights that overflow a float16 forward pass). It is evaluated on
    the test split; if that is not finite it is returned (it is then set aside). The data
    can be at fault instead (a NaN batch): then the checkpoint evaluates finite and is kept.
    """
    candidate = step - 1
    if what != "the train loss" or candidate < 1:
        return None
    if run.checkpointer.multiprocess:
        from jax.experimental import multihost_utils

        present = candidate in run.checkpointer.all_steps()
        present = bool(multihost_utils.broadcast_one_to_all(np.int32(present)))
    else:
        present = candidate in run.checkpointer.all_steps()
    if not present:
        return None
    try:
        restored = run.checkpointer.restore(jax.device_get(run.state), candidate)
    except CheckpointError:  # damaged: the next run's restore skips it with a warning
        return None
    result = evaluate(run.dp, run.eval_step, run.dp.replicate(restored[0]), run.eval_batches)
    finite = math.isfinite(result["loss"]) and math.isfinite(result["accuracy"])
    return None if finite else candidate


def _nonfinite_message(run: Run, what: str, step: int, value: Any) -> str:
    """The error of a non-finite ``what`` at ``step``; a checkpoint that the failure shows
    not to evaluate finite (:func:`_spoiled_checkpoint`) is moved to
    ``checkpoints/nonfinite-<step>`` first, so the message names one that does."""
    spoiled = _spoiled_checkpoint(run, what, step)
    if spoiled is not None and run.checkpointer.enabled:
        run.checkpointer.set_aside(spoiled, "nonfinite")
    last = run.checkpointer.latest_step()
    kept = (
        f"the last good checkpoint (step {last}) is kept in {run.checkpointer.directory}"
        if last is not None
        else "no good checkpoint was written yet"
    )
    if spoiled is not None:
        kept += (
            f" (step {spoiled} evaluates to a non-finite loss: moved to "
            f"checkpoints/nonfinite-{spoiled})"
        )
    hints = "a lower --config.optimizer.learning_rate, --config.optimizer.grad_clip_norm=1.0"
    if run.spec.run.dtype != "float32":
        hints += ", --config.dtype=float32"
    return (
        f"{what} is {value} at step {step}; the run stopped and {kept}. Try {hints} "
        "(--config.stop_on_nonfinite=False trains on regardless)."
    )


#: What each checked quantity is called in the non-finite error message.
_CHECKED = (
    ("loss", "the train loss"),
    ("grad_norm", "the gradient norm"),
    ("state_finite", "the model state (parameters, statistics or optimizer state)"),
)


def _first_nonfinite(pending: list[tuple[int, dict]]) -> tuple[str, int, Any] | None:
    """The first ``(what, step, value)`` of ``pending`` (``(step, checked metrics)`` pairs)
    with a non-finite train loss, gradient norm or model state, else ``None``.

    ``state_finite`` is the step's flag that every float of the new state is finite
    (:func:`convjax.train.step.all_finite`); one fetch of all pending values.
    """
    if not pending:
        return None
    host = jax.device_get([checked for _, checked in pending])
    for (step, _), values in zip(pending, host, strict=True):
        for key, what in _CHECKED:
            if values.get(key) is None:  # a custom step without the state flag
                continue
            value = np.asarray(values[key], np.float64).ravel()
            if key == "state_finite":
                if not (value == 1.0).all():
                    return what, step, "not finite"
            elif not np.isfinite(value).all():
                return what, step, float(value[~np.isfinite(value)][0])
    return None


def run_loop(run: Run, hooks: Sequence[Hook] = ()) -> Any:
    """Train from ``run.start`` to ``run.num_steps``; returns the device train state.

    Raises:
      NonFiniteError: a non-finite train loss (checked before every log line, evaluation and
        checkpoint, so no checkpoint holds a diverged state) or eval metric, when
        ``config.stop_on_nonfinite``.
      TrainingInterrupted: SIGINT (Ctrl-C) or SIGTERM during the loop: the step in progress
        is finished and saved (all processes agree on the step first, see
        :mod:`convjax.train.preemption`), then the run stops; a second Ctrl-C stops at once.
    """
    r, dp = run.spec.run, run.dp
    dstate = dp.replicate(run.state)
    log_every, eval_every, ckpt_every = r.log_every, r.eval_every, r.checkpoint_every
    check = r.stop_on_nonfinite
    averager = Averager()
    pending: list[tuple[int, Any]] = []
    report = _reporter(run)
    done = run.start
    if run.start < run.num_steps:
        run.say("compiling the train step (the first step can take minutes on a large model)")
    t_loop = time.perf_counter()
    t_rate, rate_from = None, run.start
    stop = StopRequest()  # SIGINT/SIGTERM: save this step, then stop (all processes agree)
    try:
        stop.__enter__()
        for step in range(run.start, run.num_steps):
            batch = next(run.train_iter)
            dstate, metrics = run.train_step(dstate, dp.shard_batch(batch))
            checked = {k: metrics.pop(k, None) for k in ("state_finite",)}
            checked.update(loss=metrics["loss"], grad_norm=metrics["grad_norm"])
            done = step + 1
            if t_rate is None:
                jax.block_until_ready(metrics)
                run.say(f"compiled and ran the first step in {time.perf_counter() - t_loop:.1f} s")
                t_rate, rate_from = time.perf_counter(), done
            averager.add(metrics)
            if check:
                pending.append((done, checked))
            is_log = done % log_every == 0 or done == run.num_steps
            is_eval = eval_every > 0 and done % eval_every == 0 and done != run.num_steps
            is_ckpt = (ckpt_every > 0 and done % ckpt_every == 0) or done == run.num_steps
            is_stop = stop.should_stop() and done != run.num_steps
            is_ckpt = is_ckpt or is_stop
            if check and (is_log or is_eval or is_ckpt):
                bad = _first_nonfinite(pending)
                pending = []
                if bad is not None:
                    values = averager.result()
                    run.writer.write(done, "train", values)
                    raise NonFiniteError(_nonfinite_message(run, *bad))
            if is_log:
                values = averager.result()
                values["time_s"] = time.perf_counter() - run.t_start
                run.writer.write(done, "train", values)
                elapsed = time.perf_counter() - t_rate
                rate = (done - rate_from) / elapsed if done > rate_from and elapsed > 0 else 0.0
                report.log(done, values, rate)
            if is_eval:
                result = evaluate(dp, run.eval_step, dstate, run.eval_batches)
                run.writer.write(done, "test", result)
                report.write(
                    f"step {done}: test accuracy {result['accuracy']:.4f}, "
                    f"loss {result['loss']:.4f}"
                )
                _check_eval(run, result, done)
            if is_ckpt:
                with contextlib.nullcontext() if stop.active else _sigint_deferred():
                    run.checkpointer.save(done, dp.unreplicate(dstate), run.train_iter.get_state())
            report.update(1)
            if is_stop:
                raise TrainingInterrupted(done, done, stop.agreed_signum)
            for hook in hooks:
                hook(done, dstate)
    except TrainingInterrupted:
        report.close()
        run.close()
        raise
    except KeyboardInterrupt as err:
        report.close()
        run.close()
        raise TrainingInterrupted(done, run.checkpointer.latest_step()) from err
    except BaseException:
        # A crash (or kill) between checkpoints: release the writers, keep the checkpoints.
        report.close()
        run.close()
        raise
    finally:
        stop.__exit__()
    report.close()
    run.train_time = time.perf_counter() - t_loop
    return dstate


@contextlib.contextmanager
def _sigint_deferred() -> Any:
    """Hold Ctrl-C (SIGINT) until the block is done, then raise ``KeyboardInterrupt``.

    Wraps checkpoint writes: an interrupt inside orbax's save would leave a half-written
    step and orbax's worker threads in a broken state. Only in the main thread (where
    Python delivers signals); elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # the user's choice (e.g. a background job): keep it
        yield
        return
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _check_eval(run: Run, result: dict, step: int) -> None:
    if not run.spec.run.stop_on_nonfinite:
        return
    for key in ("loss", "accuracy"):
        if not math.isfinite(result[key]):
            run.close()
            raise NonFiniteError(_nonfinite_message(run, f"the test {key}", step, result[key]))


def finish(run: Run, dstate: Any) -> dict[str, Any]:
    """Final evaluation, ``summary.json`` and the closing line; returns the summary."""
    final = evaluate(run.dp, run.eval_step, dstate, run.eval_batches)
    run.writer.write(run.num_steps, "test", final)
    _check_eval(run, final, run.num_steps)
    host_state: TrainState = run.dp.unreplicate(dstate)
    steps_run = run.num_steps - run.start
    spec = run.spec
    summary: dict[str, Any] = {
        "model": spec.model.name,
        "dataset": spec.data.name,
        "steps": run.num_steps,
        "steps_this_run": steps_run,
        "resumed_from": run.resumed_from,
        "num_params": run.num_params,
        "num_padding_params": run.num_pad_params,
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "test_examples": int(final["count"]),
        "train_time_s": run.train_time,
        "examples_per_s": steps_run * spec.run.batch_size / max(run.train_time, 1e-9),
        "total_time_s": time.perf_counter() - run.t_start,
        "devices": run.dp.num_devices,
        "backend": run.dp.backend,
    }
    if run.primary:
        _write_json(os.path.join(run.workdir, "summary.json"), summary)
        run.say(
            f"done. {run.num_steps} steps, test accuracy {final['accuracy']:.4f} "
            f"({int(final['count'])} examples), test loss {final['loss']:.4f}, "
            f"train time {run.train_time:.1f} s, total {summary['total_time_s']:.1f} s"
        )
    run.close()
    summary["state"] = host_state
    return summary


def train(
    config: TrainSpec | Any,
    workdir: str | None = None,
    *,
    loaders: Sequence[Any] | None = None,
    hooks: Sequence[Hook] = (),
    step: int | None = None,
) -> dict[str, Any]:
    """Train ``config`` to completion (resuming from ``<workdir>/checkpoints`` if present).

    Args:
      config: a :class:`~convjax.train.spec.TrainSpec`, or an ml_collections config or a
        (partial) mapping; missing fields take the defaults of ``convjax/configs/default.py``
        (resolved once here, :func:`convjax.train.config.resolve_spec`).
      workdir: output directory; default ``config.workdir``. Holds ``config.json``,
        ``versions.json``, ``data_info.json``, ``metrics.jsonl``, ``summary.json``,
        ``checkpoints/`` and (optionally) ``tb/``.
      loaders: ``(train_iterator, eval_iterable, info)`` to use instead of
        ``convjax.data.make_loaders`` (tests pass in-memory data). ``info`` needs
        ``num_classes``, ``input_shape`` and ``steps_per_epoch``.
      hooks: ``hook(step, state)`` after every step (``state`` is the device train state);
        an exception raised by a hook aborts the run like a crash would.
      step: resume from this checkpoint step instead of the newest intact one (``--step``).

    Returns:
      The summary: ``test_accuracy``, ``test_loss``, ``steps``, ``num_params``,
      ``train_time_s``, ``examples_per_s``, ... plus ``"state"``: the final host
      :class:`TrainState`.

    Raises:
      ConfigError / ConfigMismatchError: see :func:`setup`. NonFiniteError,
      TrainingInterrupted: see :func:`run_loop`.

    Example:
      >>> from convjax.configs import default
      >>> summary = train(default.get_config(), "runs/default")  # doctest: +SKIP
      >>> summary["test_accuracy"] > 0.9  # doctest: +SKIP
      True
    """
    run = setup(config, workdir, loaders=loaders, step=step)
    dstate = run_loop(run, hooks)
    return finish(run, dstate)


__all__ = [
    "DTYPES",
    "ConfigMismatchError",
    "NonFiniteError",
    "Run",
    "TrainingInterrupted",
    "build_model",
    "compute_dtype",
    "count_params",
    "eval_totals",
    "evaluate",
    "finish",
    "make_data",
    "make_optimizers",
    "run_loop",
    "setup",
    "train",
    "versions",
]
