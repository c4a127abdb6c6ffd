"""Normalisation: batch norm vs Network Deconvolution (Ye et al. 2020, Table 1: a 1-epoch and a
20-epoch schedule), same VGG-style CNN; the train time per epoch is part of the answer.

    convjax compare norm --quick        # digits, 1 and 6 epochs, 5 seeds
    convjax compare norm                # Fashion-MNIST, 1 and 3 epochs, 3 seeds
    convjax compare norm --recipe=adam  # the common Adam 3e-3 recipe instead

Recipe ``paper`` (default): SGD lr 0.1, momentum 0.9, weight decay 1e-3 (PyTorch's coupled L2
on every parameter), per-iteration cosine decay to 0 without warm-up, batch 128: the
defaults of the authors' code (yechengxi/deconvolution, ``arg_parser.py`` / ``main.py``: SGD
with ``weight_decay`` over all parameters, ``CosineAnnealingLR`` over every iteration), used
for the paper's CIFAR Table 1.
"""

from convjax.configs.compare import SEEDS, SEEDS5, adam_recipe, base, sgd


def get_config(quick: bool = False) -> dict:
    """The normalisation experiment (``quick``: digits, else Fashion-MNIST IDX)."""
    widths = (32, 64) if quick else (16, 32, 64)
    longer = 6 if quick else 3
    return {
        "name": "norm",
        "title": "Normalisation (Network Deconvolution)",
        "switch": "norm",
        "base": base(quick, num_epochs=1, model="digits_cnn", model_kwargs={"widths": widths}),
        "groups": {"1 epoch": {"num_epochs": 1}, f"{longer} epochs": {"num_epochs": longer}},
        "arms": {"batch": {"norm": "batch"}, "deconv": {"norm": "deconv"}},
        # A deconv seed costs ~2 min per Fashion-MNIST epoch on 2 CPU cores: 3 seeds there.
        "seeds": SEEDS5 if quick else SEEDS,
        "recipes": {
            "paper": {
                "config": {"batch_size": 128, "optimizer": sgd(0.1, 1e-3, "cosine")},
                "source": "Network Deconvolution (Ye et al. 2020) reference code "
                "yechengxi/deconvolution: SGD 0.1, momentum 0.9, wd 1e-3, per-iteration "
                "cosine, batch 128",
            },
            "adam": adam_recipe(quick),
        },
        "paper": "Network Deconvolution, CIFAR-10 VGG-16, 20 epochs: 90.07 % (BN) -> 93.25 %.",
    }
