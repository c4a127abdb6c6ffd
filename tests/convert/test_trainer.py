"""A user's own model in ``convjax train``: ``--config.model=<module>:<factory>`` and models
registered with ``convjax.models.register`` (from a config file), through the trainer, its
checkpoint, ``load_model`` and ``convjax eval`` / ``predict`` / ``export``."""

import json
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax.__main__ import main
from convjax._spec import ConfigError
from convjax.models import registry
from convjax.models.spec import ModelSpec
from convjax.nnx.padding import PadParam
from convjax.train import train
from convjax.train.config import compare_configs, config_to_json, resolve_spec
from convjax.train.factory import build_model
from convjax.train.inference import load_model
from convjax.train.state import split_model
from tests.convert.models import nnx_primitives

USER = "tests.convert.user_models:make_cnn"
TINY = {"dataset": "digits", "batch_size": 16, "num_steps": 3, "progress": False}


def _all_primitives(model, x):
    return set(nnx_primitives(model, x))


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("user_run"))
    config = {**TINY, "model": USER, "padding": "learned", "norm": "deconv"}
    config["model_kwargs"] = {"width": 4}
    summary = train(config, workdir)
    return workdir, summary


def test_unset_switches_leave_the_user_model_as_written():
    x = jnp.zeros((2, 8, 8, 1))
    plain = ModelSpec(USER).build(num_classes=10, in_features=1, input_shape=(8, 8, 1))
    prims = _all_primitives(plain, x)
    assert type(plain).__name__ == "UserCNN"  # no switch set: not converted at all
    assert "reduce_window_sum" in prims and "reduce_window_max" not in prims  # avg pool kept
    # Only the switch that is set changes the model: pool=max turns the avg pool into max.
    maxed = ModelSpec(USER, pool="max").build(num_classes=10, in_features=1, input_shape=(8, 8, 1))
    prims = _all_primitives(maxed, x)
    assert "reduce_window_max" in prims and "reduce_window_sum" not in prims
    assert not jax.tree.leaves(nnx.state(maxed, PadParam))  # padding untouched


def test_zoo_defaults_and_old_config_json_round_trip():
    spec = resolve_spec({})
    assert (spec.model.padding, spec.model.pool, spec.model.norm) == ("zero", "max", "batch")
    stored = config_to_json(spec.to_config())  # what a run wrote before unset switches existed
    assert stored["padding"] == "zero" and resolve_spec(stored) == spec
    accepted, blocking = compare_configs(stored, resolve_spec({}))
    assert not accepted and not blocking


def test_import_path_model_trains_and_round_trips(user_run):
    workdir, summary = user_run
    stored = json.load(open(os.path.join(workdir, "config.json")))
    assert stored["model"] == USER and stored["pool"] == "" and stored["padding"] == "learned"
    assert not os.path.exists(os.path.join(workdir, "model_source.json"))
    model, spec = load_model(workdir)
    x = np.random.RandomState(0).randn(4, 8, 8, 1).astype(np.float32)
    # The switches were applied by convert: learned padding, BatchNorms gone, avg pool kept.
    assert jax.tree.leaves(nnx.state(model, PadParam))
    assert not any(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_graph(model))
    prims = _all_primitives(model, jnp.asarray(x))
    assert "reduce_window_sum" in prims and "reduce_window_max" not in prims
    # The checkpoint holds the trained state: a model rebuilt from the spec and given the
    # final state of the run computes what load_model's model computes.
    state = summary["state"]
    fresh = build_model(spec, num_classes=10, in_features=1, axis_name=None, input_shape=(8, 8, 1))
    model_def, *_ = split_model(fresh)
    ref = model_def.merge(state.params, state.pad_params, state.stats, train=False)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(ref(x)))
    trained = jax.tree.leaves(state.pad_params)
    assert any(float(jnp.abs(leaf).max()) > 0 for leaf in trained)  # padding filters moved


def test_eval_predict_export_on_an_import_path_run(user_run, tmp_path, capsys):
    workdir, summary = user_run
    assert main(["convjax", "eval", f"--workdir={workdir}"]) == 0
    result = json.load(open(os.path.join(workdir, "eval_test.json")))
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"])
    np.save(tmp_path / "x.npy", np.random.RandomState(1).rand(3, 8, 8, 1).astype(np.float32))
    assert main(["convjax", "predict", f"--workdir={workdir}", str(tmp_path / "x.npy")]) == 0
    assert (
        main(
            [
                "convjax",
                "export",
                f"--workdir={workdir}",
                f"--out={tmp_path / 'f.jax'}",
                "--inputs=normalized",
            ]
        )
        == 0
    )
    exported = jax.export.deserialize(open(tmp_path / "f.jax", "rb").read())
    model, _ = load_model(workdir)
    x = np.random.RandomState(2).randn(2, 8, 8, 1).astype(np.float32)
    np.testing.assert_allclose(exported.call(x), model(x), rtol=1e-5, atol=1e-6)
    capsys.readouterr()


def test_import_path_errors_are_one_line(tmp_path, capsys):
    cases = {
        "no_such_module_i20:make": "cannot be imported",
        "tests.convert.user_models:missing": "has no attribute 'missing'",
        "tests.convert.user_models:NOT_CALLABLE": "not a callable factory",
        "tests.convert.user_models:": "must be '<module>:<factory>'",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=message) as err:
            ModelSpec(name)
        assert "\n" not in str(err.value) and str(err.value).startswith("--config.model=")
    with pytest.raises(ConfigError, match="--config.norm=deconv --config.conv=flex"):
        ModelSpec(USER, norm="deconv", conv="flex")
    # CLI: one line, non-zero exit, no traceback.
    argv = ["convjax", "train", "--config=default", "--config.model=no_such_module_i20:f"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convjax: error: --config.model=")
    # A workdir whose model module is gone: eval says so in one line.
    workdir = tmp_path / "gone"
    workdir.mkdir()
    config = config_to_json(resolve_spec({"model": USER}).to_config())
    config["model"] = "no_such_module_i20:make_cnn"
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "data_info.json").write_text(
        json.dumps({"num_classes": 10, "input_shape": [8, 8, 1]})
    )
    assert main(["convjax", "eval", f"--workdir={workdir}"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be imported" in err[0]


REGISTERING_CONFIG = """
    from convjax.configs.default import get_config as base
    from convjax.models import register
    from convjax.models.small import SmallCNN


    @register("{name}", builds=SmallCNN)
    def tiny(**kw):
        \"\"\"A tiny registered net.\"\"\"
        kw.setdefault("widths", (4,))
        return SmallCNN(**kw)


    def get_config():
        c = base()
        c.model = "{name}"
        c.num_steps = 3
        c.batch_size = 16
        c.progress = False
        return c
"""


def _unregister(monkeypatch, name):
    """As in a fresh process: the config file's registration has not run."""
    for table in (registry._REGISTRY, registry._INFO, registry._DEFAULT_CONV, registry._SOURCE):
        monkeypatch.delitem(table, name, raising=False)


def test_registered_model_from_a_config_file_evals_predicts_exports(tmp_path, monkeypatch, capsys):
    name = "i20_registered_tiny"
    cfg = tmp_path / "my_config.py"
    cfg.write_text(textwrap.dedent(REGISTERING_CONFIG.format(name=name)))
    workdir = str(tmp_path / "run")
    _unregister(monkeypatch, name)
    assert main(["convjax", "train", f"--config={cfg}", f"--workdir={workdir}"]) == 0
    source = json.load(open(os.path.join(workdir, "model_source.json")))
    assert source["model"] == name and source["file"] == str(cfg)
    model, _ = load_model(workdir)
    x = np.random.RandomState(0).randn(2, 8, 8, 1).astype(np.float32)
    expected = np.asarray(model(x))

    _unregister(monkeypatch, name)  # a new process: only the workdir is known
    assert main(["convjax", "eval", f"--workdir={workdir}"]) == 0
    _unregister(monkeypatch, name)
    pixels = np.random.RandomState(3).rand(2, 8, 8, 1).astype(np.float32)  # in 0..1
    np.save(tmp_path / "x.npy", pixels)
    assert main(["convjax", "predict", f"--workdir={workdir}", str(tmp_path / "x.npy")]) == 0
    _unregister(monkeypatch, name)
    assert main(["convjax", "eval", f"--workdir={workdir}", "--config.data.eval_batch_size=8"]) == 0
    _unregister(monkeypatch, name)
    assert main(["convjax", "export", f"--workdir={workdir}"]) == 0
    _unregister(monkeypatch, name)
    model, _ = load_model(workdir)
    np.testing.assert_array_equal(np.asarray(model(x)), expected)

    _unregister(monkeypatch, name)
    cfg.rename(tmp_path / "moved.py")  # the registering file is gone: one-line error
    capsys.readouterr()
    assert main(["convjax", "eval", f"--workdir={workdir}"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"model '{name}' was registered by {cfg}" in err[0], err


def test_a_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    """The ``convjax`` console script does not put the working directory on sys.path."""
    source = open(os.path.join(os.path.dirname(__file__), "user_models.py")).read()
    (tmp_path / "i20_cwd_nets.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    monkeypatch.delitem(__import__("sys").modules, "i20_cwd_nets", raising=False)
    model = ModelSpec("i20_cwd_nets:make_cnn").build(num_classes=10, in_features=1)
    assert type(model).__name__ == "UserCNN"
    with pytest.raises(ConfigError, match="cannot be imported"):
        ModelSpec("i20_not_in_cwd:make_cnn")


def test_deconv_converts_the_classifier_unless_the_convert_block_says_not():
    from convjax.nnx.deconv import DeconvDense

    def head(**kwargs):
        spec = ModelSpec(USER, norm="deconv", kwargs=kwargs)
        return spec.build(num_classes=10, in_features=1, input_shape=(8, 8, 1)).head

    assert isinstance(head(), DeconvDense)  # as the zoo's norm=deconv "Delinear" head
    assert type(head(convert={"deconv_dense": False})) is nnx.Linear
    with pytest.raises(ConfigError, match="model_kwargs.convert"):
        ModelSpec(USER, kwargs={"convert": {"no_such_option": 1}})


LINEN_CASES = {
    # @nn.compact ResNet: explicit padding tuples, BatchNorm, max-pool stem, strided shortcut.
    "resnet": (
        "tests.convert.user_models:make_linen_resnet",
        {"padding": "learned", "pool": "soft"},
    ),
    # setup-style VGG without BatchNorm: every conv becomes a deconvolution conv.
    "vgg": ("tests.convert.user_models:make_linen_vgg", {"norm": "deconv"}),
}


@pytest.mark.parametrize(
    "case",
    [
        "resnet",
        # ~30 s; the resnet case covers the Linen trainer path, test_convert_linen the VGG style
        pytest.param("vgg", marks=pytest.mark.slow),
    ],
)
def test_linen_model_trains_and_round_trips(case, tmp_path):
    from convjax.convert import LinenModel

    name, switches = LINEN_CASES[case]
    workdir = str(tmp_path / case)
    summary = train({**TINY, "model": name, **switches}, workdir)
    model, spec = load_model(workdir)
    assert isinstance(model, LinenModel)
    x = np.random.RandomState(0).randn(4, 8, 8, 1).astype(np.float32)
    state = summary["state"]
    fresh = build_model(spec, num_classes=10, in_features=1, axis_name=None, input_shape=(8, 8, 1))
    model_def, params, *_ = split_model(fresh)
    # Linen's own parameter paths, under `variables/params`.
    assert set(state.params["variables"]["params"]) == set(params["variables"]["params"])
    ref = model_def.merge(state.params, state.pad_params, state.stats, train=False)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(ref(x)))
    # The checkpointed parameters are the trained ones, and they are what Linen's apply takes.
    start = jax.tree.leaves(params)
    assert any(not np.array_equal(a, b) for a, b in zip(start, jax.tree.leaves(state.params)))
    y = model.linen_module.apply(
        model.linen_variables(), jnp.asarray(x), **({"train": False} if model.mode_arg else {})
    )
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    prims = _all_primitives(model, jnp.asarray(x))
    if case == "resnet":
        pad = jax.tree.leaves(state.pad_params)
        assert pad and any(float(jnp.abs(leaf).max()) > 0 for leaf in pad)  # filters trained
        assert "reduce_window_max" not in prims  # the max-pool stem is a SoftPool now
        assert "bn_init" in state.stats["variables"]["batch_stats"]  # BatchNorms kept
    else:
        stats = state.stats["variables"]["batch_stats"]
        assert all({"mean", "deconv"} <= set(v) for v in stats.values()), stats.keys()
    assert main(["convjax", "eval", f"--workdir={workdir}"]) == 0
    result = json.load(open(os.path.join(workdir, "eval_test.json")))
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"])


def test_linen_model_rejects_bad_input_by_name():
    import flax.linen as nn

    from convjax.convert import LinenModel
    from tests.convert.models import LinenVGG

    with pytest.raises(TypeError, match="`module` must be a flax.linen.Module"):
        LinenModel(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), {"params": {}})
    with pytest.raises(TypeError, match="`variables` must be the Linen variables"):
        LinenModel(LinenVGG(), {"batch_stats": {}})
    with pytest.raises(ValueError, match="`mode_arg` must be one of"):
        LinenModel(nn.Dense(2), {"params": {}}, mode_arg="mode")
