"""Pooling: max vs average vs SoftPool (Stergiou et al. 2021, Sec. 5) in the same VGG-style CNN.

    convjax compare pooling --quick     # digits, 3 epochs, 5 seeds
    convjax compare pooling             # Fashion-MNIST, 3 epochs, 3 seeds
    convjax compare pooling --recipe=adam

Recipe ``paper`` (default): SGD lr 0.1, momentum 0.9, weight decay 1e-4 (PyTorch's coupled L2
on every parameter), batch 128, the learning rate x0.1 after each third of the run: the
authors' ImageNet script (alexandrosstergiou/SoftPool ``main/train.py``: defaults lr 0.1,
momentum 0.9, wd 1e-4, batch 128, 90 epochs, x0.1 every 30 epochs), scaled to the budget.
"""

from convjax.configs.compare import SEEDS, SEEDS5, adam_recipe, base, sgd


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
        # The max-pool arm costs ~2.4 min per Fashion-MNIST seed on 2 CPU cores: 3 seeds there.
        "seeds": SEEDS5 if quick else SEEDS,
        "recipes": {
            "paper": {
                "config": {
                    "batch_size": 128,
                    "optimizer": sgd(0.1, 1e-4, "step", step_fractions=(1 / 3, 2 / 3)),
                },
                "source": "SoftPool (Stergiou et al. 2021) reference code "
                "alexandrosstergiou/SoftPool main/train.py: SGD 0.1, momentum 0.9, wd 1e-4, "
                "batch 128, x0.1 every 30 of 90 epochs (here: every third of the run)",
            },
            "adam": adam_recipe(quick),
        },
        "paper": "SoftPool over max/avg pooling: +1-2 % top-1 on ImageNet.",
    }
