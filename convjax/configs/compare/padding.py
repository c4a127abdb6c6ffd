"""Padding: zero vs reflect vs replicate vs partial vs learned (Padding Module, Alrasheedi et
al. 2023, Sec. 4: VGG and ResNet families), in a VGG-style CNN and in ResNet-20.

    convjax compare padding --quick     # digits, 3 epochs, 5 seeds
    convjax compare padding             # Fashion-MNIST, 1 epoch, 5 seeds
    convjax compare padding --recipe=adam

The full variant's ResNet-20 has half the paper's widths (8/16/32; the depth, blocks and
shortcuts of ResNet-20) to fit the experiment into about an hour on 2 CPU cores; the quick
variant keeps the paper's widths 16/32/64.

Recipe ``paper`` (default) -- an assumption: the Padding Module paper (arXiv 2301.04608, IEEE
Access 2023) has no public code, and its training hyper-parameters could not be found in a
readable source. This uses the standard CIFAR recipe of He et al. 2016 (Sec. 4.2), the origin
of the ResNet family it evaluates: SGD lr 0.1, momentum 0.9, weight decay 1e-4 (coupled L2 on
every parameter), batch 128, the learning rate x0.1 at 1/2 and 3/4 of the run (32k and 48k of
64k iterations). The Padding Module's own parameters keep their Adam 1e-3 optimizer.
"""

from convjax.configs.compare import SEEDS5, adam_recipe, base, sgd

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
        # Every arm costs under ~2 min per Fashion-MNIST seed (1 epoch) on 2 CPU cores.
        "seeds": SEEDS5,
        "recipes": {
            "paper": {
                "config": {
                    "batch_size": 128,
                    "optimizer": sgd(0.1, 1e-4, "step", step_fractions=(0.5, 0.75)),
                },
                "source": "assumed (the Padding Module paper's recipe is not public): He et "
                "al. 2016 CIFAR recipe, SGD 0.1, momentum 0.9, wd 1e-4, batch 128, x0.1 at "
                "1/2 and 3/4 of the run",
            },
            "adam": adam_recipe(quick),
        },
        "paper": "Padding Module over zero padding: +1.23 % (VGG-16, CIFAR-10), +0.44 % "
        "(ResNet-50, ImageNet).",
    }
