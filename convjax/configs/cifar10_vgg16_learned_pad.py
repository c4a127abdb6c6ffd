"""VGG-16 (CIFAR head) on CIFAR-10 with the learned Padding Module (Alrasheedi et al. 2023).

Every zero padding of VGG-16 is replaced by a PaddingModule trained by its own optimizer on
its local loss. A preset, not a verified reproduction (needs ``tfds:cifar10`` prepared in
``config.data.data_dir``, and a GPU/TPU). Compare with ``--config.padding=zero`` (the paper
reports +1.23 top-1 for VGG-16 over zero padding).

    convjax train --config=cifar10_vgg16_learned_pad --config.data.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config


def get_config() -> ml_collections.ConfigDict:
    """VGG-16 + learned padding; SGD 0.05 / momentum 0.9 / wd 5e-4, cosine, 200 epochs."""
    c = base_config()
    c.workdir = "runs/cifar10_vgg16_learned_pad"
    c.model = "vgg16"
    c.dataset = "tfds:cifar10"
    c.padding = "learned"
    c.batch_size = 128
    c.num_epochs = 200
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 780  # two epochs of 390 steps
    c.padding_optimizer.name = "adam"
    c.padding_optimizer.learning_rate = 1e-3
    c.eval_every = 1950  # every 5 epochs
    c.checkpoint_every = 1950
    c.log_every = 50
    return c
