"""``convjax data prepare``: a TFDS builder run from Python as ArrayRecord (what the README's
prepare step runs; ``tfds build`` needs apache_beam in tensorflow-datasets 4.9.10), tested
offline on a tiny registered builder written by the test, with one-line errors."""

import importlib.util
import os
import sys
import textwrap
import uuid

import pytest

from convjax.__main__ import main
from convjax.data import load_dataset

pytest.importorskip("tensorflow_datasets")

BUILDER = '''
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

IMAGES = np.random.RandomState(0).randint(0, 256, (7, 6, 5, 1)).astype(np.uint8)
LABELS = np.arange(7) % 3


class {cls}(tfds.core.GeneratorBasedBuilder):
    """A 3-class dataset of 6x5 greyscale images: 5 train, 2 test records."""

    name = "{name}"
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {{
                    "image": tfds.features.Image(shape=(6, 5, 1)),
                    "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
                }}
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        {split_body}

    def _generate_examples(self, lo, hi):
        {generate_body}
        for i in range(lo, hi):
            yield i, {{"image": PIL.Image.fromarray(IMAGES[i, ..., 0]), "label": int(LABELS[i])}}
'''


def _builder_module(tmp_path, monkeypatch, *, split_body=None, generate_body="pass"):
    """Write a module registering a fresh builder; returns (module name, dataset name)."""
    tag = uuid.uuid4().hex[:8]
    module, name = f"cj_prepare_mod_{tag}", f"cj_prepare_{tag}"
    source = BUILDER.format(
        cls=f"CjPrepare{tag.capitalize()}",
        name=name,
        split_body=split_body
        or 'return {"train": self._generate_examples(0, 5), "test": self._generate_examples(5, 7)}',
        generate_body=generate_body,
    )
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return module, name


def test_prepare_builds_array_record_that_convjax_reads(tmp_path, monkeypatch, capsys):
    module, name = _builder_module(tmp_path, monkeypatch)
    data_dir = tmp_path / "tfds"
    argv = ["convjax", "data", "prepare", name, f"--data_dir={data_dir}", f"--imports={module}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    version_dir = data_dir / name / "1.0.0"
    assert f"--config.dataset=tfds:{name} --config.data.data_dir={data_dir}" in out
    assert "train 5, test 2" in out and str(version_dir) in out
    files = os.listdir(version_dir)
    assert any(".array_record-" in f for f in files) and not any("tfrecord" in f for f in files)
    # Read back without TFDS's builder class (by name from the data_dir), record for record.
    ds = load_dataset(f"tfds:{name}", data_dir=str(data_dir), stats_images=5)
    want = sys.modules[module]
    assert ds.info.image_shape == (6, 5, 1) and ds.info.num_classes == 3
    for split, (lo, hi) in ((ds.train, (0, 5)), (ds.test, (5, 7))):
        got = sorted(
            (int(split[i]["label"]), split[i]["image"].tobytes()) for i in range(len(split))
        )
        expected = sorted((int(want.LABELS[i]), want.IMAGES[i].tobytes()) for i in range(lo, hi))
        assert got == expected
    # Run again: TFDS finds it prepared and reuses it.
    assert main(argv) == 0


def test_prepare_errors_are_one_line(tmp_path, monkeypatch, capsys):
    def error(argv, status=1):
        assert main(["convjax", "data", "prepare", *argv]) == status
        # TFDS's progress bars may come first; the error is one line, last, no traceback.
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("convjax: error: ")]
        assert errors == err[-1:] and not any("Traceback" in line for line in err), err
        return err[-1]

    assert "did you mean cifar10" in error(["cifar1O", f"--data_dir={tmp_path}"])
    assert "no module named 'no_such_module_x'" in error(["mnist", "--imports=no_such_module_x"])
    assert "--data_dir" in error(["mnist", "--data_dir"], status=2)
    # A builder that needs a module that is missing: the exact pip line.
    module, name = _builder_module(
        tmp_path, monkeypatch, generate_body="import convjax_missing_dep_xyz  # noqa"
    )
    line = error([name, f"--data_dir={tmp_path / 'd'}", f"--imports={module}"])
    assert "`pip install convjax_missing_dep_xyz`" in line
    if importlib.util.find_spec("tensorflow") is None:
        module, name = _builder_module(
            tmp_path, monkeypatch, generate_body="import tensorflow  # noqa"
        )
        line = error([name, f"--data_dir={tmp_path / 'e'}", f"--imports={module}"])
        assert "needs TensorFlow" in line and '`pip install "tensorflow>=2.16"`' in line


def test_usage_names_both_data_commands(capsys):
    assert main(["convjax", "data", "build"]) == 2
    err = capsys.readouterr().err
    assert "convjax data prepare <tfds name>" in err and "convjax data convert <tfds name>" in err
