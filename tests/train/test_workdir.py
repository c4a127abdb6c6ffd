"""A workdir that describes itself and runs you can reuse: config.json / versions.json, the
resume config check, no duplicate metric rows, the non-finite stop, and the
load_model / eval / predict / export round trips."""

import collections
import json
import os

import jax
import numpy as np
import pytest

from convjax.__main__ import main
from convjax.data import load_dataset, make_loaders
from convjax.train.config import ConfigError, compare_configs, config_to_json, resolve_config
from convjax.train.inference import (
    evaluate_workdir,
    export_model,
    load_model,
    logits_fn,
    predict,
)
from convjax.train.loop import ConfigMismatchError, NonFiniteError, train
from convjax.train.metrics import read_jsonl
from tests.train.common import trees_equal


def _tiny(workdir, **fields):
    """digits_cnn at width 4 with learned padding, 8 devices (pmap), 4 steps."""
    config = {
        "model_kwargs": {"widths": (4,)},
        "padding": "learned",
        "batch_size": 16,
        "num_steps": 4,
        "checkpoint_every": 2,
        "eval_every": 0,
        "log_every": 1,
        "progress": False,
        "workdir": str(workdir),
    }
    config.update(fields)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run shared by the read-only tests below: (workdir, summary)."""
    workdir = tmp_path_factory.mktemp("trained")
    return str(workdir), train(_tiny(workdir))


def _counts(workdir):
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return collections.Counter((r["step"], r["split"]) for r in rows)


# ------------------------------------------------------------------------------ config


def test_resolve_config_merges_once_and_names_flags():
    config = resolve_config({"num_steps": 3, "optimizer": {"name": "sgd"}})
    assert config.optimizer.name == "sgd" and config.optimizer.warmup_steps == 20
    assert config.eval_every == 100 and config.checkpoint_every == 200  # the one default
    with pytest.raises(ConfigError, match=r"^--config.batch_size must be >= 1, got 0$"):
        resolve_config({"batch_size": 0})
    with pytest.raises(
        ConfigError,
        match=r"^unknown field --config.num_stepz; did you mean --config.num_steps\?$",
    ):
        resolve_config({"num_stepz": 3})
    with pytest.raises(ConfigError, match=r"--config.optimizer.nam; did you mean"):
        resolve_config({"optimizer": {"nam": "sgd"}})
    with pytest.raises(ConfigError, match="--config.pool must be one of"):
        resolve_config({"pool": "median"})


def test_dataset_and_data_name_are_one_field():
    # Either spelling selects the dataset; the resolved config has the one field `dataset`.
    for user in ({"data": {"name": "idx:/d"}}, {"dataset": "idx:/d"}, {"dataset": ""}):
        config = resolve_config(user)
        want = "digits" if user == {"dataset": ""} else "idx:/d"
        assert config.dataset == want and "name" not in config.data
    agree = resolve_config({"dataset": "idx:/d", "data": {"name": "idx:/d"}})
    assert agree.dataset == "idx:/d"
    with pytest.raises(
        ConfigError,
        match=r"^--config.dataset='idx:/a' and --config.data.name='tfds:b' name different",
    ):
        resolve_config({"dataset": "idx:/a", "data": {"name": "tfds:b"}})
    # A run stored before the two were reconciled (data.name left at its default) resumes.
    old = config_to_json(resolve_config({"dataset": "idx:/d"}))
    old["data"]["name"] = "digits"
    assert compare_configs(old, resolve_config({"dataset": "idx:/d"})) == ({}, {})


def test_compare_configs_splits_resumable_fields():
    old = config_to_json(resolve_config({"num_steps": 10}))
    accepted, blocking = compare_configs(
        old, resolve_config({"num_steps": 20, "eval_every": 5, "norm": "none", "seed": 1})
    )
    assert accepted == {"eval_every": (100, 5), "num_steps": (10, 20)}
    assert blocking == {"norm": ("batch", "none"), "seed": (0, 1)}
    # A config stored before a field existed: accepted at the default, blocking otherwise.
    del old["data"]["flip"]
    accepted, blocking = compare_configs(old, resolve_config({"num_steps": 10}))
    assert accepted == {"data.flip": ("<absent>", "auto")} and not blocking
    _, blocking = compare_configs(old, resolve_config({"num_steps": 10, "data": {"flip": "true"}}))
    assert blocking == {"data.flip": ("<absent>", "true")}


# ------------------------------------------------------------------------------ workdir


def test_workdir_describes_itself(trained):
    workdir, summary = trained
    stored = json.load(open(os.path.join(workdir, "config.json")))
    assert stored == config_to_json(resolve_config(_tiny(workdir)))
    versions = json.load(open(os.path.join(workdir, "versions.json")))
    assert versions["jax"] == jax.__version__ and versions["devices"]["count"] == 8
    assert {"flax", "convjax", "python"} <= set(versions)
    info = json.load(open(os.path.join(workdir, "data_info.json")))
    assert info["num_classes"] == 10 and info["input_shape"] == [8, 8, 1]
    assert summary["steps"] == 4 and int(summary["state"].step) == 4


def test_rerunning_a_finished_run_adds_no_rows(trained, capsys):
    workdir, summary = trained
    before = _counts(workdir)
    again = train(_tiny(workdir))
    assert again["steps_this_run"] == 0 and again["test_accuracy"] == summary["test_accuracy"]
    assert _counts(workdir) == before
    assert max(before.values()) == 1


def test_resume_with_other_model_fields_stops(trained, capsys):
    workdir, _ = trained
    with pytest.raises(ConfigMismatchError) as err:
        train(_tiny(workdir, pool="avg", optimizer={"learning_rate": 0.1}))
    message = str(err.value)
    assert "--config.pool: 'max' -> 'avg'" in message
    assert "--config.optimizer.learning_rate: 0.003 -> 0.1" in message
    assert "--config.num_steps" not in message
    # The CLI: one line, exit status 1, the checkpoints untouched.
    status = main(
        ["convjax", "train", "--config=default", "--config.pool=avg", f"--workdir={workdir}"]
    )
    assert status == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "--config.pool" in err_lines[0]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


class Killed(Exception):
    pass


def test_resume_after_a_crash_and_longer_run_has_no_duplicate_rows(tmp_path, capsys):
    """Crash after step 3 (checkpoint at 2, rows for 1..3), resume with num_steps=6 (an
    accepted change, logged): every (step, split) appears exactly once."""

    def kill_at_3(step, _state):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(_tiny(tmp_path), hooks=[kill_at_3])
    assert _counts(str(tmp_path))[(3, "train")] == 1
    capsys.readouterr()
    summary = train(_tiny(tmp_path, num_steps=6))
    assert summary["resumed_from"] == 2
    assert "resuming with changed fields: --config.num_steps: 4 -> 6" in capsys.readouterr().out
    counts = _counts(str(tmp_path))
    assert set(counts.values()) == {1}
    assert sorted(s for s, split in counts if split == "train") == [1, 2, 3, 4, 5, 6]
    assert json.load(open(tmp_path / "config.json"))["num_steps"] == 6


# ------------------------------------------------------------------------------ non-finite


class _PoisonAfter:
    """A train iterator whose batches turn to NaN images after ``n`` batches."""

    def __init__(self, inner, n):
        self.inner, self.n, self.i = inner, n, 0

    def __next__(self):
        batch = dict(next(self.inner))
        self.i += 1
        if self.i > self.n:
            batch["image"] = np.full_like(batch["image"], np.nan)
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def _loaders(poison_after):
    train_it, evaluation, info = make_loaders(
        "digits", seed=0, global_batch_size=16, process_index=0, process_count=1
    )
    return _PoisonAfter(train_it, poison_after), evaluation, info


def test_nonfinite_train_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = _tiny(tmp_path, num_steps=8, log_every=4)
    with pytest.raises(NonFiniteError) as err:
        train(config, loaders=_loaders(poison_after=2))
    message = str(err.value)
    assert "the train loss is nan at step 3" in message
    assert "last good checkpoint (step 2)" in message
    assert "--config.optimizer.learning_rate" in message
    assert "--config.stop_on_nonfinite=False" in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_nonfinite_stop_is_one_line_and_exit_status_1_in_the_cli(tmp_path, monkeypatch, capsys):
    import convjax.train.loop as loop

    monkeypatch.setattr(loop, "make_data", lambda config: _loaders(poison_after=2))
    argv = [
        "convjax", "train", "--config=default", "--config.model_kwargs.widths=(4,)",
        "--config.batch_size=16", "--config.num_steps=4", "--config.checkpoint_every=2",
        "--config.progress=False", f"--workdir={tmp_path}",
    ]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convjax: error: the train loss is nan at step 3")


def test_nonfinite_check_can_be_turned_off(tmp_path):
    config = _tiny(tmp_path, num_steps=3, stop_on_nonfinite=False)
    summary = train(config, loaders=_loaders(poison_after=1))
    assert summary["steps"] == 3
    losses = [r["loss"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"), "train")]
    assert losses[0] is not None and losses[-1] is None  # NaN is written as null


# ------------------------------------------------------------------------------ reuse


def _test_images(n=6):
    test = load_dataset("digits").test
    return np.stack([test[i]["image"] for i in range(n)]), [int(test[i]["label"]) for i in range(n)]


def test_load_model_round_trip(trained):
    workdir, summary = trained
    model, spec = load_model(workdir)
    assert spec.model.padding == "learned" and spec.run.num_steps == 4
    from flax import nnx

    from convjax.nnx import PadParam

    host = summary["state"]
    assert trees_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)), host.params)
    assert trees_equal(nnx.to_pure_dict(nnx.state(model, PadParam)), host.pad_params)
    x = np.random.RandomState(0).randn(3, 8, 8, 1).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(logits_fn(model, spec)(x)), 1e-6)


def test_eval_matches_the_run_and_writes_json(trained, capsys):
    workdir, summary = trained
    result = evaluate_workdir(workdir, write=False)
    assert result["count"] == summary["test_examples"] == 360 and result["step"] == 4
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-9)
    assert result["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert main(["convjax", "eval", f"--workdir={workdir}", "--split=train"]) == 0
    out = capsys.readouterr().out
    assert "train split at step 4" in out and "(1437 examples)" in out
    written = json.load(open(os.path.join(workdir, "eval_train.json")))
    assert written["count"] == 1437 and 0.0 <= written["accuracy"] <= 1.0


def test_predict_npy_idx_and_png(trained, tmp_path, capsys):
    from PIL import Image

    from convjax.data import DatasetInfo, ImageTransform, write_idx

    workdir, _ = trained
    images, _ = _test_images()
    np.save(tmp_path / "digits.npy", images)
    write_idx(tmp_path / "digits-ubyte", images[..., 0])
    Image.fromarray(images[0, ..., 0]).save(tmp_path / "first.png")
    top = predict(workdir, [str(tmp_path / "digits.npy")], top_k=3)
    assert len(top) == 6 and all(len(row) == 3 for row in top)
    assert predict(workdir, [str(tmp_path / "digits-ubyte")], top_k=3) == top
    assert predict(workdir, [str(tmp_path / "first.png")], top_k=3) == top[:1]
    # The ranking is that of the model's logits on the pipeline's eval transform.
    model, config = load_model(workdir)
    info = json.load(open(os.path.join(workdir, "data_info.json")))
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.items()})
    logits = np.asarray(logits_fn(model, config)(ImageTransform(info, train=False)(images, None)))
    assert [row[0][0] for row in top] == list(np.argmax(logits, -1))
    for row in top:
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and 0.0 < sum(probs) <= 1.0 + 1e-9
    assert (
        main(
            ["convjax", "predict", f"--workdir={workdir}", "--top_k=2", str(tmp_path / "first.png")]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(f"first.png: {top[0][0][0]} (")
    names = []
    predict(workdir, [str(tmp_path / "digits.npy"), str(tmp_path / "first.png")], names=names)
    assert names == [f"digits.npy[{i}]" for i in range(6)] + ["first.png"]


def test_export_round_trip(trained, tmp_path, capsys):
    workdir, _ = trained
    path = export_model(workdir, str(tmp_path / "fn.jax"), inputs="normalized")
    exported = jax.export.deserialize(open(path, "rb").read())
    model, config = load_model(workdir)
    for n in (1, 5):  # a symbolic batch size
        x = np.random.RandomState(n).randn(n, 8, 8, 1).astype(np.float32)
        np.testing.assert_allclose(
            np.asarray(exported.call(x)),
            np.asarray(logits_fn(model, config)(x)),
            rtol=1e-5,
            atol=1e-6,
        )
    signature = json.load(open(tmp_path / "signature.json"))
    assert signature["input_shape"] == ["b", 8, 8, 1] and signature["output_shape"] == ["b", 10]
    assert signature["inputs"] == "normalized"
    assert main(["convjax", "export", f"--workdir={workdir}"]) == 0
    assert os.path.exists(os.path.join(workdir, "export", "eval_fn.jax"))
    assert "wrote" in capsys.readouterr().out
    assert json.load(open(os.path.join(workdir, "export", "signature.json")))["inputs"] == "raw"


def test_export_of_raw_pixels_matches_model_and_predict(trained, tmp_path):
    """The default export normalises inside: raw uint8 pixels (as float32) give the model's
    logits on the pipeline's normalised images, and the classes `convjax predict` prints."""
    from convjax.data import DatasetInfo, ImageTransform

    workdir, _ = trained
    images, _ = _test_images()  # uint8 (6, 8, 8, 1), as the data pipeline reads them
    path = export_model(workdir, str(tmp_path / "raw.jax"))
    exported = jax.export.deserialize(open(path, "rb").read())
    raw_logits = np.asarray(exported.call(images.astype(np.float32)), np.float64)
    model, config = load_model(workdir)
    info = json.load(open(os.path.join(workdir, "data_info.json")))
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.items()})
    normalised = ImageTransform(info, train=False)(images, None)
    assert abs(float(normalised.mean())) < 5 and not np.allclose(normalised, images)
    np.testing.assert_allclose(
        raw_logits, np.asarray(model(normalised), np.float64), rtol=1e-5, atol=1e-5
    )
    np.save(tmp_path / "digits.npy", images)
    top = predict(workdir, [str(tmp_path / "digits.npy")], top_k=3)
    probs = np.exp(raw_logits - raw_logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for row, p in zip(top, probs):
        assert [c for c, _ in row] == list(np.argsort(-p)[:3])
        np.testing.assert_allclose([q for _, q in row], p[[c for c, _ in row]], rtol=1e-4)
    # The normalised-input export fed raw pixels is what gave constant wrong classes.
    signature = json.load(open(tmp_path / "signature.json"))
    assert signature["inputs"] == "raw" and signature["input_shape"] == ["b", 8, 8, 1]
    with pytest.raises(ValueError, match=r"--inputs must be one of \['raw', 'normalized'\]"):
        export_model(workdir, str(tmp_path / "x.jax"), inputs="pixels")
    assert main(["convjax", "export", f"--workdir={workdir}", "--inputs=pixels"]) == 2


def test_export_preprocessing_matches_the_sequence_transform():
    """preprocess_fn (JAX) == ImageTransform (NumPy) for the flatten and permute layouts."""
    from convjax.data import DatasetInfo, ImageTransform
    from convjax.train.inference import preprocess_fn

    info = DatasetInfo("digits", 10, (4, 5, 2), 1, 1, (0.2, 0.4), (0.3, 0.1), False)
    images = np.random.RandomState(0).randint(0, 256, (3, 4, 5, 2)).astype(np.uint8)
    for sequence in ("none", "flatten", "permute"):
        config = resolve_config({"data": {"sequence": sequence, "permutation_seed": 3}})
        fn, shape = preprocess_fn(info, config)
        want = ImageTransform(info, train=False, sequence=sequence, permutation_seed=3)(
            images, None
        )
        assert shape == (4, 5, 2)
        np.testing.assert_allclose(np.asarray(fn(images.astype(np.float32))), want, atol=1e-6)
        np.testing.assert_allclose(np.asarray(fn(images)), want, atol=1e-6)  # uint8 too


def test_reuse_errors_are_one_line(tmp_path, capsys):
    assert main(["convjax", "eval", f"--workdir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json not found" in err[0]
