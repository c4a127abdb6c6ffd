"""FlexTCN on sequential MNIST (sMNIST): each 28x28 image is a sequence of 784 pixels.

Causal 1-D FlexConv residual blocks (widths 32 x 4). Use ``--config.data.sequence=permute``
for pMNIST (a fixed seeded pixel permutation). The paper reports ~99.6 % (sMNIST) and
98.72 % (pMNIST). A preset, not a verified reproduction: needs ``tfds:mnist`` prepared, or
point ``--config.dataset=idx:<dir>`` at a directory of MNIST IDX files.

    convjax train --config=smnist_flextcn --config.data.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config


def get_config() -> ml_collections.ConfigDict:
    """FlexTCN on sMNIST; Adam 0.01 with warm-up + cosine, batch 64, 200 epochs."""
    c = base_config()
    c.workdir = "runs/smnist_flextcn"
    c.model = "flextcn"
    c.conv = "flex"
    c.dataset = "tfds:mnist"
    c.data.sequence = "flatten"
    c.batch_size = 64
    c.num_epochs = 200
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 0.01
    c.optimizer.warmup_steps = 4690  # five epochs of 938 steps
    c.eval_every = 9380
    c.checkpoint_every = 9380
    c.log_every = 100
    return c
