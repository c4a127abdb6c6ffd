"""Conv: FlexNet vs the same net with fixed 3x3 kernels (FlexConv, Romero et al. 2022, Table 3),
with the learned kernel sizes recorded after every epoch (kernel_sizes.png; the paper's Fig. 5).

    convjax compare conv --quick        # digits, flexnet_tiny (horizon 17), 10 epochs, 3 seeds
    convjax compare conv                # Fashion-MNIST, flexnet_tiny (horizon 33), 3 epochs
"""

from convjax.configs.compare import SEEDS, base


def get_config(quick: bool = False) -> dict:
    """The conv experiment (``quick``: digits, else Fashion-MNIST IDX)."""
    return {
        "name": "conv",
        "title": "Conv: FlexConv vs fixed 3x3 (FlexNet)",
        "switch": "conv",
        "base": base(
            quick,
            num_epochs=10 if quick else 3,
            model="flexnet_tiny",
            # The horizon spans the input, as 33 does on CIFAR's 32x32 in the paper.
            model_kwargs={"flex_kernel_size": 17 if quick else 33},
        ),
        "groups": {"FlexNet-tiny": {}},
        "arms": {"3x3": {"conv": "standard"}, "flex": {"conv": "flex"}},
        "seeds": SEEDS,
        "kernel_sizes": True,
        "paper": "FlexNet-7 on CIFAR-10: 92.2 % vs 89.5 % for the same net with 3x3 convs.",
    }
