"""The resolved run spec and the command line around it: one resolution per process, the
stored config.json round trip, one dataset field, the switches each model honours, and the
one-line errors and suggestions of ``convjax``."""

import json
import os

import jax
import pytest
from flax import nnx

import convjax
from convjax.__main__ import UsageError, main, models_table, parse_command_line
from convjax.configs.default import base_config
from convjax.data.spec import DataSpec
from convjax.models import SWITCHES, available_models, model_info
from convjax.models.spec import ModelSpec
from convjax.train.config import ConfigError, config_to_json, resolve_spec
from convjax.train.optim import OptimizerSpec, PaddingOptimizerSpec
from convjax.train.spec import RunSpec, TrainSpec


def _run(capsys, *args):
    status = main(["convjax", *args])
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------------------ the spec
def test_spec_defaults_are_the_config_defaults():
    """Each spec's own defaults equal those of configs/default.py (one set of defaults)."""
    assert resolve_spec() == TrainSpec()
    base = base_config()
    assert OptimizerSpec.from_config(base.optimizer) == OptimizerSpec()
    assert PaddingOptimizerSpec.from_config(base.padding_optimizer) == PaddingOptimizerSpec()
    assert DataSpec.from_config(base) == DataSpec()
    assert RunSpec.from_config(base) == RunSpec()
    assert ModelSpec.from_config(base) == ModelSpec()


@pytest.mark.parametrize("name", ["default", "cifar10_flexnet", "smnist_flextcn"])
def test_stored_config_json_round_trips_to_the_same_spec(name):
    config = convjax.configs.load_config_module(f"convjax/configs/{name}.py").get_config()
    spec = resolve_spec(config)
    stored = json.loads(json.dumps(config_to_json(spec)))  # what <workdir>/config.json holds
    assert TrainSpec.from_config(stored) == spec
    assert resolve_spec(stored) == spec
    spec2 = resolve_spec({"model_kwargs": {"widths": (4, 8)}, "data": {"mean": (0.5,), "std": 2}})
    back = resolve_spec(json.loads(json.dumps(config_to_json(spec2))))
    assert back == spec2 and back.model.kwargs["widths"] == (4, 8) and back.data.std == (2.0,)


def test_resolve_spec_passes_a_spec_through_and_checks_values():
    spec = resolve_spec({"num_steps": 3})
    assert resolve_spec(spec) is spec
    with pytest.raises(ConfigError, match=r"^--config.batch_size must be >= 1, got 0$"):
        resolve_spec({"batch_size": 0})
    with pytest.raises(ConfigError, match=r"^--config.optimizer.name must be one of"):
        resolve_spec({"optimizer": {"name": "lion"}})
    with pytest.raises(ConfigError, match=r"^--config.data.sequence must be one of"):
        resolve_spec({"data": {"sequence": "spiral"}})


def test_resolution_runs_once_in_a_cli_train_run(tmp_path, capsys, monkeypatch):
    calls = []
    original = TrainSpec.from_config.__func__

    def counted(cls, config):
        calls.append(1)
        return original(cls, config)

    monkeypatch.setattr(TrainSpec, "from_config", classmethod(counted))
    status, out, err = _run(
        capsys,
        "train",
        "--config=default",
        "--config.num_steps=2",
        "--config.batch_size=16",
        "--config.model_kwargs.widths=(4,)",
        "--config.progress=False",
        f"--workdir={tmp_path}",
    )
    assert status == 0, err
    assert len(calls) == 1
    assert TrainSpec.from_config(json.load(open(tmp_path / "config.json"))).run.num_steps == 2


# ------------------------------------------------------------------------------ one dataset
@pytest.mark.parametrize(
    "flag", ["--config.dataset=tfds:fashion_mnist", "--config.data.name=tfds:fashion_mnist"]
)
@pytest.mark.parametrize("preset", ["fashion_mnist_idx", "cifar10_resnet_deconv"])
def test_command_line_dataset_wins_over_the_config_file(capsys, preset, flag):
    status, out, err = _run(
        capsys,
        "train",
        f"--config={preset}",
        flag,
        "--config.data.data_dir=/tmp/x",
        "--print_config",
    )
    assert status == 0, err
    lines = out.splitlines()
    assert "--config.dataset=tfds:fashion_mnist" in lines
    assert "--config.data.data_dir=/tmp/x" in lines


# ------------------------------------------------------------------------------ switches
@pytest.mark.parametrize("name", available_models())
def test_every_model_accepts_the_default_switches(name):
    spec = ModelSpec(name)
    assert set(spec.honoured_switches) <= set(SWITCHES)
    for switch in model_info(name).switches:
        assert switch in spec.honoured_switches


def test_a_switch_the_model_ignores_is_a_one_line_error(capsys):
    status, _, err = _run(
        capsys,
        "train",
        "--config=default",
        "--config.model=resnet20",
        "--config.pool=soft",
        "--print_config",
    )
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("convjax: error: --config.pool='soft' has no effect on model 'resnet20'")
    assert "--config.padding, --config.norm, --config.conv" in err
    # A FlexNet honours the pool only with pool_after (where its pools are).
    with pytest.raises(ConfigError, match="no effect on model 'flexnet7'"):
        ModelSpec("flexnet7", pool="soft")
    assert ModelSpec("flexnet7", pool="soft", kwargs={"pool_after": (0,)}).pool == "soft"


def test_switch_combination_and_model_kwargs_errors(capsys):
    status, _, err = _run(
        capsys,
        "train",
        "--config=default",
        "--config.norm=deconv",
        "--config.conv=flex",
        "--print_config",
    )
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("convjax: error: --config.norm=deconv --config.conv=flex: ")
    status, _, err = _run(
        capsys,
        "train",
        "--config=default",
        "--config.model=resnet20",
        "--config.model_kwargs.widht=(8, 16, 32)",
        "--print_config",
    )
    assert status == 2 and err.count("\n") == 1
    assert "unknown field --config.model_kwargs.widht for model 'resnet20'" in err
    assert "did you mean --config.model_kwargs.widths?" in err and "widths" in err


# ------------------------------------------------------------------------------ command line
def test_config_file_syntax_error_is_one_line_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import ml_collections\n\ndef get_config(:\n    pass\n")
    status, _, err = _run(capsys, "train", f"--config={bad}")
    assert status == 2 and err.count("\n") == 1
    assert f"{bad}:3: " in err


@pytest.mark.parametrize(
    "args, hint",
    [
        (["--config=default", "--num_steps=3"], "did you mean --config.num_steps?"),
        (["--config", "default"], "did you mean --config=default?"),
        (["--config=defualt"], "did you mean --config=default?"),
    ],
)
def test_suggestions(capsys, args, hint):
    status, _, err = _run(capsys, "train", *args)
    assert status == 2 and err.count("\n") == 1 and hint in err


def test_version(capsys):
    status, out, _ = _run(capsys, "--version")
    assert status == 0 and out.strip() == f"convjax {convjax.__version__}"


def test_print_config_honours_workdir_and_prints_tuples(capsys):
    status, out, _ = _run(
        capsys,
        "train",
        "--config=default",
        "--workdir=/tmp/elsewhere",
        "--config.model_kwargs.widths=(16, 32)",
        "--print_config",
    )
    assert status == 0
    lines = out.splitlines()
    assert "--config.workdir=/tmp/elsewhere" in lines
    assert "--config.model_kwargs.widths=(16, 32)" in lines and "!!python" not in out


def test_models_lists_parameters_descriptions_and_switches():
    table = models_table()
    for name in available_models():
        assert name in table
    line = next(row for row in table.splitlines() if row.startswith("digits_cnn "))
    model = ModelSpec("digits_cnn").build(num_classes=10, in_features=1)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert f"{params:,} params" in line and "switches: padding, pool, norm, conv" in line
    resnet = next(row for row in table.splitlines() if row.startswith("resnet20 "))
    assert "switches: padding, norm, conv" in resnet


def test_eval_predict_export_take_overrides_but_not_model_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config_to_json(resolve_spec())))
    line = parse_command_line(
        ["convjax", "eval", f"--workdir={tmp_path}", "--config.data.eval_batch_size=32"]
    )
    assert isinstance(line.config, TrainSpec) and line.config.data.eval_batch_size == 32
    for command in ("eval", "predict", "export"):
        extra = ["x.npy"] if command == "predict" else []
        with pytest.raises(UsageError, match="--config.pool is fixed by the run's checkpoint"):
            parse_command_line(
                ["convjax", command, f"--workdir={tmp_path}", "--config.pool=avg", *extra]
            )
    with pytest.raises(ConfigError, match="did you mean --config.num_steps"):
        parse_command_line(["convjax", "eval", f"--workdir={tmp_path}", "--config.num_stepz=1"])


def test_compare_takes_config_overrides(capsys):
    from convjax.compare import main as compare_main

    status = compare_main(["pooling", "--quick", "--config.num_stepz=3"])
    err = capsys.readouterr().err
    assert status == 2 and "did you mean --config.num_steps?" in err


def test_no_import_cycles():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "import_graph.py")
    spec = importlib.util.spec_from_file_location("import_graph", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    edges, _ = module.graph()
    assert module.cycles(edges) == []
