"""Pooling: max vs average vs SoftPool (Stergiou et al. 2021, Sec. 5) in the same VGG-style CNN.

convjax compare pooling --quick     # digits, 3 epochs, 3 seeds
convjax compare pooling             # Fashion-MNIST, 3 epochs, 3 seeds
"""

from convjax.configs.compare import SEEDS, base


def get_config(quick: bool = False) -> dict:
    """The pooling experiment (``quick``: digits, else Fashion-MNIST IDX)."""
    widths = (32, 64) if quick else (16, 32, 64)
    return {
        "name": "pooling",
        "title": "Pooling (SoftPool)",
        "switch": "pool",
        "base": base(quick, num_epochs=3, model="digits_cnn", model_kwargs={"widths": widths}),
        "groups": {"VGG-style": {}},
        "arms": {pool: {"pool": pool} for pool in ("max", "avg", "soft")},
        "seeds": SEEDS,
        "paper": "SoftPool over max/avg pooling: +1-2 % top-1 on ImageNet.",
    }
