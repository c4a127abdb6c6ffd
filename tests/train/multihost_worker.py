"""One process of the multi-host test job (run by ``convjax launch``; see test_multihost.py).

Every process of the job runs this script with ``JAX_COORDINATOR_ADDRESS`` /
``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` set by the launcher and does, with
``convjax.train.loop.train`` on the real digits pipeline (each process reads only its shard):

1. a short run under ``pmap`` (checkpoints every 2 steps);
2. a resume under ``shard_map``: process 0 copies the pmap run's checkpoints and drops the
   newest one; all processes train the same config again, restarting from the older one;
3. writes its final host state of each run to ``<out>/state_<run>_p<i>.npz``.

The single-process reference runs the same script alone: ``multihost_worker.py <out>
--single`` with 8 CPU devices.

Process ``i`` uses the working directory ``<out>/p<i>/<run>``, so the test can check that
only process 0 wrote logs, metrics and checkpoints (and that resuming needs no files on the
other processes).

Usage: ``convjax launch --processes 2 -- tests/train/multihost_worker.py <out_dir>``, or
``JAX_NUM_CPU_DEVICES=8 python tests/train/multihost_worker.py <out_dir> --single``; add
``--norm=deconv`` for network deconvolution instead of BatchNorm.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from typing import Any

import ml_collections
import numpy as np

#: Train steps of each run and the step of the checkpoint the resume restarts from.
NUM_STEPS = 4
RESUME_STEP = 2
#: Runs written by the worker, in order.
RUNS = ("pmap", "resume")


def make_config(parallel: str, norm: str = "batch") -> ml_collections.ConfigDict:
    """The tiny job: digits_cnn (one stage of width 4) with learned padding and BatchNorm.

    Learned padding gives the padding optimizer real state, BatchNorm (or ``norm="deconv"``:
    network deconvolution) gives statistics synced over all devices; global batch 32 = 8
    devices x 4 examples.
    """
    from convjax.configs.default import base_config

    c = base_config()
    c.model_kwargs = ml_collections.ConfigDict({"widths": (4,)})
    c.padding = "learned"
    c.norm = norm
    c.batch_size = 32
    c.num_steps = NUM_STEPS
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.warmup_steps = 1
    c.padding_optimizer.name = "sgd"
    c.padding_optimizer.learning_rate = 0.1
    c.parallel = parallel
    c.log_every = 1
    c.eval_every = RESUME_STEP
    c.checkpoint_every = RESUME_STEP
    c.keep_checkpoints = 3
    c.progress = False
    c.data.eval_batch_size = 120
    c.data.num_threads = 0
    c.data.prefetch_batches = 1
    return c


def flatten_state(state: Any) -> dict[str, np.ndarray]:
    """``TrainState`` -> ``{"params/conv0/kernel": array, ...}`` (empty containers dropped)."""
    from flax import serialization

    out: dict[str, np.ndarray] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}/{key}" if prefix else str(key), value)
        else:
            out[prefix] = np.asarray(node)

    walk("", serialization.to_state_dict(state))
    return out


def run_job(out_dir: str, norm: str = "batch") -> None:
    """The job of one process (also run by the single-process reference, in-process).

    1. ``pmap`` run of :data:`NUM_STEPS` steps, checkpoints every :data:`RESUME_STEP`;
    2. process 0 copies that run's checkpoints and drops those after :data:`RESUME_STEP`;
       all processes then train the same config under ``shard_map``, which resumes from
       step :data:`RESUME_STEP` (the checkpoint is independent of the backend);
    3. each run's final host state goes to ``<out>/state_<run>_p<i>.npz``.
    """
    import jax
    from jax.experimental import multihost_utils

    from convjax.train.loop import train

    pid = jax.process_index()
    work = os.path.join(out_dir, f"p{pid}")

    def run(name: str, parallel: str) -> None:
        summary = train(make_config(parallel, norm), os.path.join(work, name))
        state = flatten_state(summary["state"])
        resumed = summary["resumed_from"]
        state["__resumed_from"] = np.asarray(-1 if resumed is None else resumed)
        np.savez(os.path.join(out_dir, f"state_{name}_p{pid}.npz"), **state)

    run("pmap", "pmap")
    if pid == 0:
        source = os.path.join(work, "pmap", "checkpoints")
        target = os.path.join(work, "resume", "checkpoints")
        shutil.copytree(source, target)
        for step in os.listdir(target):
            if step.isdigit() and int(step) > RESUME_STEP:
                shutil.rmtree(os.path.join(target, step))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("multihost_worker: checkpoints copied")
    run("resume", "shard_map")


def main(out_dir: str, single: bool = False, norm: str = "batch") -> None:
    """Join the job described by the launcher's environment, then :func:`run_job`.

    With ``single`` run alone instead (the one-process reference; no ``jax.distributed``).
    """
    from convjax.train.distributed import setup_distributed

    if single:
        import jax

        assert jax.process_count() == 1
    elif not setup_distributed():
        raise SystemExit("expected JAX_COORDINATOR_ADDRESS etc. from `convjax launch`")
    try:
        run_job(out_dir, norm)
    except BaseException:
        # Exit at once: a normal exit would wait in jax.distributed's shutdown barrier for
        # peers that may be stuck in a collective with this process.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    print("worker: done", flush=True)


if __name__ == "__main__":
    options = sys.argv[2:]
    norms = [o.split("=", 1)[1] for o in options if o.startswith("--norm=")]
    main(sys.argv[1], single="--single" in options, norm=norms[-1] if norms else "batch")
