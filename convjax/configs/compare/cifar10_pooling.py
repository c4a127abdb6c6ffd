"""CIFAR-10, paper-sized: VGG-16 with max vs average vs SoftPool (Stergiou et al. 2021) under
the SoftPool recipe (``--recipe=adam`` too), 90 epochs.

    convjax compare cifar10_pooling --data_dir=~/tensorflow_datasets

Needs ``tfds:cifar10`` prepared and an accelerator (not run on CPU). The paper trains ImageNet
ResNets; on CIFAR-10 the pools of VGG-16 are the ones to swap (the CIFAR ResNet-18 has none).
Recipe ``paper``: alexandrosstergiou/SoftPool ``main/train.py``: SGD lr 0.1, momentum 0.9,
weight decay 1e-4 (coupled L2 on every parameter), batch 128, 90 epochs, x0.1 every 30.
"""

from convjax.configs.compare import CIFAR10, SEEDS, adam_recipe, cifar10_only, sgd


def get_config(quick: bool = False) -> dict:
    """The CIFAR-10 pooling experiment (no quick variant)."""
    cifar10_only("cifar10_pooling", quick)
    return {
        "name": "cifar10_pooling",
        "title": "CIFAR-10: max vs average vs SoftPool (VGG-16)",
        "switch": "pool",
        "base": {"dataset": CIFAR10, "progress": True, "num_epochs": 90, "model": "vgg16"},
        "groups": {"VGG-16": {}},
        "arms": {pool: {"pool": pool} for pool in ("max", "avg", "soft")},
        "seeds": SEEDS,
        "recipes": {
            "paper": {
                "config": {
                    "batch_size": 128,
                    "optimizer": sgd(0.1, 1e-4, "step", step_fractions=(1 / 3, 2 / 3)),
                },
                "source": "alexandrosstergiou/SoftPool main/train.py: SGD 0.1, momentum 0.9, "
                "wd 1e-4, batch 128, x0.1 every 30 of 90 epochs",
            },
            "adam": adam_recipe(False),
        },
        "paper": "SoftPool over max/avg pooling: +1-2 % top-1 on ImageNet.",
    }
