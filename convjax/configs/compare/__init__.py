"""Experiments of ``convjax compare <name>`` (configs as code; see :mod:`convjax.compare`).

Each file's ``get_config(quick=False)`` returns an experiment: a base trainer config, groups
(model families or schedules), arms that differ in one switch, the seeds, and its *recipes*
(``"paper"``: the paper's training recipe as the authors' code ran it, scaled to the epoch
budget, the default; ``"adam"``: the one Adam 3e-3 recipe every experiment used before, for
comparison; ``convjax compare <name> --recipe=adam``). The full variants train on
Fashion-MNIST read offline from IDX files (Debian's ``dataset-fashion-mnist``,
``/usr/share/datasets/fashion-mnist``); ``quick=True`` trains on scikit-learn's embedded 8x8
digits in a few minutes on 2 CPU cores. Any run can point at another dataset, e.g.
``convjax compare padding --dataset=tfds:cifar10``; the ``cifar10_*`` experiments are the
paper-sized models with the papers' recipes and epoch counts on CIFAR-10 (GPU-sized).
"""

#: Fashion-MNIST IDX files installed by Debian's ``dataset-fashion-mnist``.
FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"
#: CIFAR-10 through TFDS (``--data_dir`` points at a prepared ``tensorflow_datasets``).
CIFAR10 = "tfds:cifar10"

#: Seeds of an experiment whose arms cost more than ~2 minutes per seed on 2 CPU cores.
SEEDS = (0, 1, 2)
#: Seeds of an experiment whose every arm costs under ~2 minutes per seed on 2 CPU cores.
SEEDS5 = (0, 1, 2, 3, 4)

#: Train examples per epoch of the shipped datasets (to scale warm-up to the epoch budget).
NUM_TRAIN = {"digits": 1437, FASHION_MNIST: 60000, CIFAR10: 50000}


def dataset(quick: bool) -> str:
    """The dataset of the quick (digits) or the full (Fashion-MNIST) variant."""
    return "digits" if quick else FASHION_MNIST


def base(quick: bool, **fields):
    """The trainer fields every shipped experiment shares, plus ``fields``."""
    out = {"dataset": dataset(quick), "progress": False}
    out.update(fields)
    return out


def adam_recipe(quick: bool, **fields) -> dict:
    """The recipe every experiment used before the papers' own: Adam 3e-3, linear warm-up
    (20 steps quick, 100 full) then cosine decay, batch 64 (quick) / 128, no weight decay."""
    config = {
        "batch_size": 64 if quick else 128,
        "optimizer": {
            "name": "adam",
            "learning_rate": 3e-3,
            "warmup_steps": 20 if quick else 100,
            "schedule": "cosine",
            "weight_decay": 0.0,
        },
    }
    config.update(fields)
    return {
        "config": config,
        "source": "convjax's common recipe (Adam 3e-3, warm-up + cosine), not a paper's",
    }


def sgd(lr: float, weight_decay: float, schedule: str, **optimizer) -> dict:
    """An SGD optimizer block with PyTorch's coupled L2 on every parameter (momentum 0.9)."""
    out = {
        "name": "sgd",
        "learning_rate": lr,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": weight_decay,
        "weight_decay_on": "all",
        "schedule": schedule,
        "warmup_steps": 0,
        "end_learning_rate_factor": 0.0,
    }
    out.update(optimizer)
    return out


def warmup_steps(data: str, batch_size: int, num_epochs: int, fraction: float) -> int:
    """``fraction`` of the run's steps (at least 1): a warm-up scaled to the epoch budget."""
    steps = NUM_TRAIN[data] // batch_size * num_epochs
    return max(1, round(fraction * steps))


def cifar10_only(name: str, quick: bool) -> None:
    """The CIFAR-10 experiments have no quick variant: say so in one line."""
    if quick:
        raise ValueError(
            f"`{name}` trains the paper-sized models on CIFAR-10 and has no --quick variant; "
            f"use `convjax compare {name.removeprefix('cifar10_')} --quick` for a CPU run."
        )
