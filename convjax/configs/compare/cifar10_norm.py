"""CIFAR-10, paper-sized: VGG-16 and ResNet-18 with batch norm vs Network Deconvolution, after 1
and 20 epochs (Ye et al. 2020, Table 1), under the paper's recipe (``--recipe=adam`` too).

    convjax compare cifar10_norm --data_dir=~/tensorflow_datasets

Needs ``tfds:cifar10`` prepared and an accelerator (not run on CPU). Recipe ``paper``: SGD lr
0.1, momentum 0.9, weight decay 1e-3 (coupled L2 on every parameter), per-iteration cosine
decay to 0, batch 128: the defaults of yechengxi/deconvolution (``arg_parser.py``,
``main.py``). The paper's Table 1 (BN / ND): VGG-16 1 ep 14.12 / 74.18, 20 ep 90.07 / 93.25;
ResNet-18 1 ep 56.25 / 72.89, 20 ep 92.64 / 94.07.
"""

from convjax.configs.compare import CIFAR10, SEEDS, adam_recipe, cifar10_only, sgd


def get_config(quick: bool = False) -> dict:
    """The CIFAR-10 normalisation experiment (no quick variant)."""
    cifar10_only("cifar10_norm", quick)
    return {
        "name": "cifar10_norm",
        "title": "CIFAR-10: batch norm vs Network Deconvolution (VGG-16, ResNet-18)",
        "switch": "norm",
        "base": {"dataset": CIFAR10, "progress": True, "num_epochs": 20},
        "groups": {
            "VGG-16, 1 epoch": {"model": "vgg16", "num_epochs": 1},
            "VGG-16, 20 epochs": {"model": "vgg16", "num_epochs": 20},
            "ResNet-18, 1 epoch": {
                "model": "resnet18",
                "model_kwargs": {"stem": "cifar"},
                "num_epochs": 1,
            },
            "ResNet-18, 20 epochs": {
                "model": "resnet18",
                "model_kwargs": {"stem": "cifar"},
                "num_epochs": 20,
            },
        },
        "arms": {"batch": {"norm": "batch"}, "deconv": {"norm": "deconv"}},
        "seeds": SEEDS,
        "recipes": {
            "paper": {
                "config": {"batch_size": 128, "optimizer": sgd(0.1, 1e-3, "cosine")},
                "source": "yechengxi/deconvolution defaults: SGD 0.1, momentum 0.9, wd 1e-3, "
                "per-iteration cosine, batch 128",
            },
            "adam": adam_recipe(False),
        },
        "paper": "Table 1 (BN / ND): VGG-16 1 ep 14.12 / 74.18, 20 ep 90.07 / 93.25; "
        "ResNet-18 1 ep 56.25 / 72.89, 20 ep 92.64 / 94.07.",
    }
