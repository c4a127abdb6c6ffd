"""A two-process job that joins ``jax.distributed`` and then waits (for the bind-address test).

Each process joins from the launcher's environment, runs one all-device ``psum`` (so the
CPU collectives have connected too), writes ``<out>/ready_<i>`` and waits until
``<out>/stop`` exists (at most 120 s), so the test can read the listening sockets meanwhile.

Usage: ``convjax launch --processes 2 --devices-per-process 1 -- multihost_listen.py <out>``.
"""

from __future__ import annotations

import os
import sys
import time


def main(out_dir: str) -> None:
    from convjax.train.distributed import setup_distributed

    if not setup_distributed():
        raise SystemExit("expected JAX_COORDINATOR_ADDRESS etc. in the environment")
    import jax
    import numpy as np

    total = jax.pmap(lambda x: jax.lax.psum(x, "i"), axis_name="i", devices=jax.devices())
    ones = np.ones((jax.local_device_count(), 1), np.float32)
    value = float(np.asarray(total(ones).addressable_data(0)).ravel()[0])
    pid = jax.process_index()
    print(f"listen: process {pid} psum = {value}", flush=True)
    with open(os.path.join(out_dir, f"ready_{pid}"), "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(out_dir, "stop")) and time.monotonic() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    main(sys.argv[1])
