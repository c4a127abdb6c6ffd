"""One process of the multi-host preemption test (run by ``convjax launch``; see
test_preemption_multihost.py).

Every process trains the same tiny job (digits_cnn, 12 steps, a checkpoint only at the end):

1. ``stop``: process 1 alone receives SIGTERM after step 4 (a real ``os.kill`` of itself, as
   when one host of a job is preempted); every process must stop at the same step, and
   process 0 saves that step. Each process writes ``<out>/stop_p<i>.json`` (the step it
   stopped at, the checkpoint step, the signal);
2. ``stop`` again: the same command resumes from that checkpoint and finishes;
3. ``straight``: the same job uninterrupted, in another workdir.

Each process writes its final host state of runs 2 and 3 to ``<out>/state_<run>_p<i>.npz``.
Usage: ``convjax launch --processes 2 --devices-per-process 2 -- tests/train/
multihost_preempt.py <out_dir>``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import numpy as np

#: The step after which process 1 receives SIGTERM, and the job's length.
SIGNAL_STEP = 4
NUM_STEPS = 12


def run_job(out_dir: str) -> None:
    import jax

    from convjax.train.loop import TrainingInterrupted, train
    from tests.train.multihost_worker import flatten_state, make_config

    pid = jax.process_index()

    def config():
        c = make_config("pmap")
        c.num_steps = NUM_STEPS
        c.checkpoint_every = 0
        c.eval_every = 0
        return c

    def preempt(step, _state):
        if pid == 1 and step == SIGNAL_STEP:
            os.kill(os.getpid(), signal.SIGTERM)

    def save(name, summary):
        state = flatten_state(summary["state"])
        state["__resumed_from"] = np.asarray(summary["resumed_from"] or -1)
        np.savez(os.path.join(out_dir, f"state_{name}_p{pid}.npz"), **state)

    work = os.path.join(out_dir, f"p{pid}")
    try:
        train(config(), os.path.join(work, "stop"), hooks=[preempt])
        stopped = {"step": None}
    except TrainingInterrupted as err:
        stopped = {"step": err.step, "checkpoint_step": err.checkpoint_step, "signal": err.signum}
    with open(os.path.join(out_dir, f"stop_p{pid}.json"), "w") as f:
        json.dump(stopped, f)
    save("resumed", train(config(), os.path.join(work, "stop")))
    save("straight", train(config(), os.path.join(work, "straight")))


def main(out_dir: str) -> None:
    from convjax.train.distributed import setup_distributed

    if not setup_distributed():
        raise SystemExit("expected JAX_COORDINATOR_ADDRESS etc. from `convjax launch`")
    try:
        run_job(out_dir)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    print("worker: done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
