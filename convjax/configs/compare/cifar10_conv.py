"""CIFAR-10, paper-sized: FlexNet-7 with FlexConv vs 3x3 convs (Romero et al. 2022, Table 3),
under the FlexConv recipe (``--recipe=adam`` too), 350 epochs.

    convjax compare cifar10_conv --data_dir=~/tensorflow_datasets

Needs ``tfds:cifar10`` prepared and an accelerator (not run on CPU). Recipe ``paper``: the
authors' FlexNet-7 command (rjbruin/flexconv ``experiments/readme.md``): Adam lr 0.01, 5
warm-up epochs then per-iteration cosine, mask parameters at 0.1x, dropout 0.2, batch 64,
350 epochs, no weight decay, no anti-aliasing penalty.
"""

from convjax.configs.compare import (
    CIFAR10,
    SEEDS,
    adam_recipe,
    cifar10_only,
    warmup_steps,
)


def get_config(quick: bool = False) -> dict:
    """The CIFAR-10 conv experiment (no quick variant)."""
    cifar10_only("cifar10_conv", quick)
    return {
        "name": "cifar10_conv",
        "title": "CIFAR-10: FlexConv vs 3x3 (FlexNet-7)",
        "switch": "conv",
        "base": {
            "dataset": CIFAR10,
            "progress": True,
            "num_epochs": 350,
            "model": "flexnet7",
            "model_kwargs": {"flex_kernel_size": 33},
        },
        "groups": {"FlexNet-7": {}},
        "arms": {"3x3": {"conv": "standard"}, "flex": {"conv": "flex"}},
        "seeds": SEEDS,
        "kernel_sizes": True,
        "recipes": {
            "paper": {
                "config": {
                    "batch_size": 64,
                    "model_kwargs": {"dropout": 0.2},
                    "aliasing_weight": 0.0,
                    "optimizer": {
                        "name": "adam",
                        "learning_rate": 0.01,
                        "schedule": "cosine",
                        "warmup_steps": warmup_steps(CIFAR10, 64, 350, 5 / 350),
                        "mask_lr_factor": 0.1,
                        "weight_decay": 0.0,
                    },
                },
                "source": "rjbruin/flexconv FlexNet-7 command: Adam 0.01, 5 warm-up epochs + "
                "cosine, mask lr 0.1x, dropout 0.2, batch 64, 350 epochs, no penalty",
            },
            "adam": adam_recipe(False),
        },
        "paper": "FlexNet-7 on CIFAR-10: 92.2 % vs 89.5 % for the same net with 3x3 convs.",
    }
