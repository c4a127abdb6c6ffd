"""A two-process job in which process 1 dies (for the failure tests in test_multihost.py).

Each process joins the job from the launcher's environment, writes its pid to
``<out>/pid_<i>``, and runs an all-device ``psum``. Then process 1 exits with status 3 while
process 0 keeps running collectives, which now never complete: only the launcher (or, without
one, JAX's heartbeat check) can end it.

Usage: ``convjax launch --processes 2 --devices-per-process 1 -- multihost_crash.py <out>``.
"""

from __future__ import annotations

import os
import sys


def main(out_dir: str) -> None:
    from convjax.train.distributed import setup_distributed

    if not setup_distributed():
        raise SystemExit("expected JAX_COORDINATOR_ADDRESS etc. in the environment")
    import jax
    import numpy as np

    pid = jax.process_index()
    with open(os.path.join(out_dir, f"pid_{pid}"), "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    total = jax.pmap(lambda x: jax.lax.psum(x, "i"), axis_name="i", devices=jax.devices())
    ones = np.ones((jax.local_device_count(), 1), np.float32)
    value = float(np.asarray(total(ones).addressable_data(0)).ravel()[0])
    print(f"crash: process {pid} psum = {value}", flush=True)
    if pid == 1:
        print("crash: process 1 exits with status 3", flush=True)
        os._exit(3)
    while True:
        total(ones).block_until_ready()


if __name__ == "__main__":
    main(sys.argv[1])
