"""FlexTCN on sequential MNIST (sMNIST): each 28x28 image is a sequence of 784 pixels.

Causal 1-D FlexConv residual blocks (widths 32 x 4) whose horizon is the sequence length,
784, as in the paper: every layer can see the whole sequence and the learned mask crops it
(the default bucket ladder reaches 784; sizes from 65 on run as FFT convolutions), trained
without the anti-aliasing penalty as in the authors' code (their regulariser reads the
masks of 2-D layers only). Use
``--config=pmnist_flextcn`` (or ``--config.data.sequence=permute``) for pMNIST. The paper
reports ~99.6 % (sMNIST) and 98.72 % (pMNIST). A preset, not a verified reproduction: needs
``tfds:mnist`` prepared, or point ``--config.dataset=idx:<dir>`` at a directory of MNIST IDX
files.

    convjax train --config=smnist_flextcn --config.data.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config
from convjax.data.sequential import sequence_shape

#: sMNIST / pMNIST sequence length: the 28 x 28 pixels of an image, one per step.
SEQUENCE_LENGTH = sequence_shape((28, 28, 1), "flatten")[0]


def get_config() -> ml_collections.ConfigDict:
    """FlexTCN on sMNIST, horizon 784; Adam 0.01 with warm-up + cosine, batch 64, 200 epochs."""
    c = base_config()
    c.workdir = "runs/smnist_flextcn"
    c.model = "flextcn"
    c.conv = "flex"
    c.dataset = "tfds:mnist"
    c.data.sequence = "flatten"
    c.model_kwargs = ml_collections.ConfigDict(dict(flex_kernel_size=SEQUENCE_LENGTH))
    c.batch_size = 64
    c.num_epochs = 200
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 0.01
    c.optimizer.warmup_steps = 4690  # five epochs of 938 steps
    c.optimizer.mask_lr_factor = 0.1
    c.aliasing_weight = 0.0  # the authors' regulariser is 2-D only: no penalty on sequences
    c.eval_every = 9380
    c.checkpoint_every = 9380
    c.log_every = 100
    return c
