"""CIFAR ResNet-20 on CIFAR-10 with Network Deconvolution (Ye et al. 2020) instead of BN.

Each Conv+BN becomes one ``DeconvConv`` (block 64, 5 Newton-Schulz iterations, sampling
stride 3) and the classifier a ``DeconvDense``; moments are averaged across devices. The
official CIFAR defaults: SGD lr 0.1, momentum 0.9, weight decay 1e-3, batch 128, cosine decay
per iteration, 20 epochs. A preset, not a verified reproduction (needs ``tfds:cifar10``
prepared). Compare with ``--config.norm=batch``.

    convjax train --config=cifar10_resnet_deconv --config.data.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config


def get_config() -> ml_collections.ConfigDict:
    """ResNet-20 + deconvolution; SGD 0.1 / momentum 0.9 / wd 1e-3, cosine, 20 epochs."""
    c = base_config()
    c.workdir = "runs/cifar10_resnet_deconv"
    c.model = "resnet20"
    c.dataset = "tfds:cifar10"
    c.norm = "deconv"
    c.batch_size = 128
    c.num_epochs = 20
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-3
    c.optimizer.weight_decay_on = "all"  # PyTorch SGD: coupled L2 on every parameter
    c.optimizer.warmup_steps = 0
    c.eval_every = 390
    c.checkpoint_every = 390
    c.log_every = 50
    return c
