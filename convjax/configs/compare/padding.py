"""Padding: zero vs reflect vs replicate vs partial vs learned (Padding Module, Alrasheedi et
al. 2023, Sec. 4: VGG and ResNet families), in a VGG-style CNN and in ResNet-20.

    convjax compare padding --quick     # digits, 3 epochs, 3 seeds
    convjax compare padding             # Fashion-MNIST, 1 epoch, 3 seeds

The full variant's ResNet-20 has half the paper's widths (8/16/32; the depth, blocks and
shortcuts of ResNet-20) to fit the experiment into about an hour on 2 CPU cores; the quick
variant keeps the paper's widths 16/32/64.
"""

from convjax.configs.compare import SEEDS, base

MODES = ("zero", "reflect", "replicate", "partial", "learned")


def get_config(quick: bool = False) -> dict:
    """The padding experiment (``quick``: digits, else Fashion-MNIST IDX)."""
    vgg_widths = (32, 64) if quick else (16, 32, 64)
    return {
        "name": "padding",
        "title": "Padding mode (Padding Module)",
        "switch": "padding",
        "base": base(quick, num_epochs=3 if quick else 1),
        "groups": {
            "VGG-style": {"model": "digits_cnn", "model_kwargs": {"widths": vgg_widths}},
            "ResNet-20": {
                "model": "resnet20",
                "model_kwargs": {"widths": (16, 32, 64) if quick else (8, 16, 32)},
            },
        },
        "arms": {mode: {"padding": mode} for mode in MODES},
        "seeds": SEEDS,
        "paper": "Padding Module over zero padding: +1.23 % (VGG-16, CIFAR-10), +0.44 % "
        "(ResNet-50, ImageNet).",
    }
