"""ResNet-50 on ImageNet with SoftPool as the stem pool (Stergiou et al. 2021).

As in the SoftPool repository only the stem max-pool is swapped (3x3 s2 -> SoftPool 2x2 s2).
SGD lr 0.1 (batch 256), momentum 0.9, weight decay 1e-4, 90 epochs; the paper decays the
learning rate x0.1 every 30 epochs, this preset uses cosine decay instead (the trainer's
schedules are warm-up + cosine or constant). Needs ``imagenet2012`` prepared in
``config.data.data_dir`` and accelerators; the paper reports +1-2 % top-1 over max pooling.

    convjax train --config=imagenet_resnet50_softpool --config.data.data_dir=/data/tfds
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config


def get_config() -> ml_collections.ConfigDict:
    """ResNet-50 + SoftPool stem; SGD 0.1 / momentum 0.9 / wd 1e-4, 90 epochs, bf16."""
    c = base_config()
    c.workdir = "runs/imagenet_resnet50_softpool"
    c.model = "resnet50"
    c.pool = "soft"
    c.dataset = "tfds:imagenet2012"
    c.data.image_size = 224
    c.data.eval_split = "validation"
    c.batch_size = 256
    c.num_epochs = 90
    c.dtype = "bfloat16"
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_on = "all"  # PyTorch SGD: coupled L2 on every parameter
    c.optimizer.warmup_steps = 5000
    c.eval_every = 5004  # every epoch of 1,281,167 / 256 images
    c.checkpoint_every = 5004
    c.log_every = 100
    return c
