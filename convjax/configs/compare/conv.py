"""Conv: FlexNet vs the same net with fixed 3x3 kernels (FlexConv, Romero et al. 2022, Table 3),
with the learned kernel sizes recorded after every epoch (kernel_sizes.png; the paper's Fig. 5).

    convjax compare conv --quick        # digits, flexnet_tiny (horizon 17), 10 epochs, 5 seeds
    convjax compare conv                # Fashion-MNIST, flexnet_tiny (horizon 33), 3 epochs
    convjax compare conv --recipe=adam

Recipe ``paper`` (default): Adam lr 0.01, linear warm-up over 5/350 of the run then cosine
decay per iteration, the Gaussian-mask parameters at 0.1x the learning rate, dropout 0.2,
batch 64, no weight decay and no anti-aliasing penalty: the authors' CIFAR-10 FlexNet-7
command (rjbruin/flexconv ``experiments/readme.md``: ``train.lr=0.01
train.scheduler=cosine train.scheduler_params.warmup_epochs=5 train.epochs=350
train.mask_params_lr_factor=0.1 net.dropout=0.2 train.batch_size=64 train.weight_decay=0
kernel.regularize=False``).
"""

from convjax.configs.compare import SEEDS, SEEDS5, adam_recipe, base, dataset, warmup_steps


def get_config(quick: bool = False) -> dict:
    """The conv experiment (``quick``: digits, else Fashion-MNIST IDX)."""
    epochs = 10 if quick else 3
    return {
        "name": "conv",
        "title": "Conv: FlexConv vs fixed 3x3 (FlexNet)",
        "switch": "conv",
        "base": base(
            quick,
            num_epochs=epochs,
            model="flexnet_tiny",
            # The horizon spans the input, as 33 does on CIFAR's 32x32 in the paper.
            model_kwargs={"flex_kernel_size": 17 if quick else 33},
        ),
        "groups": {"FlexNet-tiny": {}},
        "arms": {"3x3": {"conv": "standard"}, "flex": {"conv": "flex"}},
        # The flex arm costs ~5 min per Fashion-MNIST seed on 2 CPU cores: 3 seeds there.
        "seeds": SEEDS5 if quick else SEEDS,
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
                        "warmup_steps": warmup_steps(dataset(quick), 64, epochs, 5 / 350),
                        "mask_lr_factor": 0.1,
                        "weight_decay": 0.0,
                    },
                },
                "source": "FlexConv (Romero et al. 2022) reference code rjbruin/flexconv, "
                "CIFAR-10 FlexNet-7 command: Adam 0.01, 5/350 warm-up + cosine, mask lr "
                "0.1x, dropout 0.2, batch 64, no penalty",
            },
            "adam": adam_recipe(quick),
        },
        "paper": "FlexNet-7 on CIFAR-10: 92.2 % vs 89.5 % for the same net with 3x3 convs.",
    }
