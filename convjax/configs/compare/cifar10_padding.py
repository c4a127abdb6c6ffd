"""CIFAR-10, paper-sized: VGG-16 with zero / reflect / replicate / partial / learned padding
(Padding Module, Alrasheedi et al. 2023), under the assumed recipe (``--recipe=adam`` too).

    convjax compare cifar10_padding --data_dir=~/tensorflow_datasets

Needs ``tfds:cifar10`` prepared and an accelerator (not run on CPU). The paper's training
hyper-parameters are not public (no code); recipe ``paper`` assumes He et al. 2016's CIFAR
recipe (Sec. 4.2): SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, x0.1 at 1/2 and
3/4 of 164 epochs (64k iterations).
"""

from convjax.configs.compare import CIFAR10, SEEDS, adam_recipe, cifar10_only, sgd

MODES = ("zero", "reflect", "replicate", "partial", "learned")


def get_config(quick: bool = False) -> dict:
    """The CIFAR-10 padding experiment (no quick variant)."""
    cifar10_only("cifar10_padding", quick)
    return {
        "name": "cifar10_padding",
        "title": "CIFAR-10: padding modes (VGG-16)",
        "switch": "padding",
        "base": {"dataset": CIFAR10, "progress": True, "num_epochs": 164, "model": "vgg16"},
        "groups": {"VGG-16": {}},
        "arms": {mode: {"padding": mode} for mode in MODES},
        "seeds": SEEDS,
        "recipes": {
            "paper": {
                "config": {
                    "batch_size": 128,
                    "optimizer": sgd(0.1, 1e-4, "step", step_fractions=(0.5, 0.75)),
                },
                "source": "assumed (not public): He et al. 2016 CIFAR recipe, SGD 0.1, "
                "momentum 0.9, wd 1e-4, batch 128, x0.1 at 1/2 and 3/4 of 164 epochs",
            },
            "adam": adam_recipe(False),
        },
        "paper": "Padding Module over zero padding: +1.23 % (VGG-16, CIFAR-10).",
    }
