"""CIFAR ResNet-20 on Fashion-MNIST read offline from IDX files (Debian's
``dataset-fashion-mnist`` package ships them under /usr/share/datasets/fashion-mnist).

Runs on a CPU in tens of minutes (60k 28x28 images, 5 epochs); point
``--config.dataset=idx:<dir>`` at any directory of MNIST-format files.

    convjax train --config=fashion_mnist_idx --config.num_epochs=1
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config


def get_config() -> ml_collections.ConfigDict:
    """ResNet-20 on Fashion-MNIST (IDX); SGD 0.1 / momentum 0.9 / wd 5e-4, cosine, 5 epochs."""
    c = base_config()
    c.workdir = "runs/fashion_mnist_idx"
    c.model = "resnet20"
    c.dataset = "idx:/usr/share/datasets/fashion-mnist"
    c.batch_size = 128
    c.num_epochs = 5
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 200
    c.eval_every = 500
    c.checkpoint_every = 500
    c.log_every = 50
    return c
