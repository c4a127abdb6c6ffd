"""Normalisation: batch norm vs Network Deconvolution (Ye et al. 2020, Table 1: a 1-epoch and a
20-epoch schedule), same VGG-style CNN; the train time per epoch is part of the answer.

    convjax compare norm --quick        # digits, 1 and 6 epochs, 3 seeds
    convjax compare norm                # Fashion-MNIST, 1 and 3 epochs, 3 seeds
"""

from convjax.configs.compare import SEEDS, base


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
        "seeds": SEEDS,
        "paper": "Network Deconvolution, CIFAR-10 VGG-16, 20 epochs: 90.07 % (BN) -> 93.25 %.",
    }
