"""The command line (``convjax train --config=... --config.x=...``) and the shipped configs."""

import importlib

import pytest
from flax import nnx

from convjax.__main__ import main, parse_args, shipped_configs
from convjax.configs import default
from convjax.models import available_models
from convjax.train.config import resolve_config
from convjax.train.loop import build_model, compute_dtype

REQUIRED_CONFIGS = {
    "default",
    "cifar10_vgg16_learned_pad",
    "cifar10_resnet_deconv",
    "cifar10_flexnet",
    "imagenet_resnet50_softpool",
    "smnist_flextcn",
}


def test_parse_config_file_and_overrides():
    command, config, workdir = parse_args(
        [
            "convjax",
            "train",
            "--config=convjax/configs/default.py",
            "--config.num_steps=7",
            "--config.optimizer.name=sgd",
            "--config.optimizer.learning_rate=0.25",
            "--config.padding=learned",
            "--config.data.crop_padding=2",
            "--workdir=/tmp/somewhere",
        ]
    )
    assert command == "train" and workdir == "/tmp/somewhere"
    assert config.run.num_steps == 7 and config.model.padding == "learned"
    assert config.optimizer.name == "sgd" and config.optimizer.learning_rate == 0.25
    assert config.data.crop_padding == 2
    assert config.run.num_epochs == default.get_config().num_epochs  # untouched fields stay
    assert config.run.workdir == "/tmp/somewhere"  # --workdir is the run's workdir


def test_shipped_config_by_name():
    _, config, workdir = parse_args(["convjax", "train", "--config=cifar10_resnet_deconv"])
    assert config.model.norm == "deconv" and config.model.name == "resnet20" and workdir is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convjax", "train"], "needs --config"),
        (["convjax", "fly", "--config=default"], "unknown command"),
        (["convjax", "train", "--config=no_such_config"], "not a shipped config"),
        (["convjax", "train", "--config=default", "--config.no_such_field=1"], "no_such_field"),
        (["convjax", "train", "--config=default", "--config.num_steps=many"], "num_steps"),
        (["convjax"], "usage"),
    ],
)
def test_cli_errors_exit_nonzero(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err + captured.out


def test_cli_lists_configs_and_models(capsys):
    assert main(["convjax", "configs"]) == 0
    assert set(capsys.readouterr().out.split()) == set(shipped_configs())
    assert main(["convjax", "models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in out if not line.startswith(" ")} == set(available_models())


# (num_classes, input channels) of the datasets the shipped configs name.
DATASET_SHAPES = {
    "digits": (10, 1),
    "tfds:cifar10": (10, 3),
    "tfds:imagenet2012": (1000, 3),
    "tfds:mnist": (10, 1),
    "idx:/usr/share/datasets/fashion-mnist": (10, 1),
}


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_config_is_complete_and_builds(name):
    """Same fields as the default; a known dataset; model + switches build (abstractly)."""
    assert REQUIRED_CONFIGS <= set(shipped_configs())
    config = importlib.import_module(f"convjax.configs.{name}").get_config()
    assert set(config.keys()) == set(default.get_config().keys())
    resolve_config(config)  # every value passes the checks
    assert config.model in available_models()
    compute_dtype(config.dtype)
    num_classes, channels = DATASET_SHAPES[config.dataset]
    model = nnx.eval_shape(
        lambda: build_model(config, num_classes=num_classes, in_features=channels)
    )
    assert isinstance(model, nnx.Module)


def test_bad_dtype_is_rejected():
    with pytest.raises(ValueError, match="config.dtype"):
        compute_dtype("float8")
