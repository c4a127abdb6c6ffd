"""TFDS datasets as users have them: small real datasets written by TFDS in the test itself,
in ArrayRecord (read without TensorFlow) and TFRecord (converted once to ArrayRecord without
TensorFlow), found by name from their data_dir (the builders are not registered), with
flip/normalisation derived from the data and one-line errors."""

import json
import logging
import os
import shutil
import struct
import sys

import numpy as np
import pytest

from convjax.data import (
    DataError,
    channel_stats,
    describe_data,
    load_dataset,
    make_loaders,
    tfds_files,
)
from convjax.data import sources as sources_module
from convjax.data.cli import main as convert_main
from convjax.data.tfds_files import (
    closest_prepared,
    convert_to_array_record,
    crc32c,
    has_array_record,
    masked_crc32c,
    prepared_datasets,
    read_tfrecord,
    write_tfrecord,
)

pytest.importorskip("tensorflow_datasets")

from tests.data.tfds_writer import write_tfds_dataset  # noqa: E402

NAME = "tiny_digits"
DIGIT_NAMES = [str(i) for i in range(10)]


def _digits_splits():
    """40 train / 16 test real 8x8 digits (scikit-learn's), as uint8 (N, 8, 8, 1)."""
    ds = load_dataset("digits")
    return {
        "train": (ds.train.images[:40], ds.train.labels[:40]),
        "test": (ds.test.images[:16], ds.test.labels[:16]),
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One data_dir per file format, each holding tiny_digits (1 channel, classes '0'..'9');
    the ArrayRecord one also holds colour datasets for the flip rule and one of varying size."""
    splits = _digits_splits()
    ar_root = tmp_path_factory.mktemp("array_record")
    tf_root = tmp_path_factory.mktemp("tfrecord")
    write_tfds_dataset(ar_root, NAME, splits, class_names=DIGIT_NAMES)
    write_tfds_dataset(tf_root, NAME, splits, class_names=DIGIT_NAMES, file_format="tfrecord")
    rng = np.random.default_rng(0)
    colour = {
        s: (rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8), np.arange(n) % 3)
        for s, n in (("train", 9), ("test", 3))
    }
    write_tfds_dataset(ar_root, "tiny_things", colour, class_names=["cat", "dog", "ship"])
    write_tfds_dataset(ar_root, "tiny_house_numbers", colour, class_names=["1", "2", "3"])
    varying = {
        s: (
            [rng.integers(0, 256, (5 + i, 7 + i % 2, 3), dtype=np.uint8) for i in range(n)],
            np.arange(n) % 3,
        )
        for s, n in (("train", 4), ("test", 2))
    }
    write_tfds_dataset(
        ar_root,
        "tiny_varying",
        varying,
        class_names=["a1", "b2", "c3"],
        image_shape=(None, None, 3),
    )
    return {"array_record": str(ar_root), "tfrecord": str(tf_root), "splits": splits}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVJAX_CACHE_DIR", str(tmp_path / "cache"))


def _tfrecord_copy(prepared, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared["tfrecord"], data_dir)
    return str(data_dir), str(data_dir / NAME / "1.0.0")


def _records(source):
    records = (source[i] for i in range(len(source)))
    return sorted((int(r["label"]), r["image"].tobytes()) for r in records)


def _expected(arrays):
    images, labels = arrays
    return sorted((int(y), np.asarray(x).tobytes()) for x, y in zip(images, labels))


def _contents(directory):
    return {f: open(os.path.join(directory, f), "rb").read() for f in os.listdir(directory)}


def _error(fn, *parts):
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    for part in parts:
        assert str(part) in message, message
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- ArrayRecord


def test_array_record_dataset_found_by_name_and_read_without_tensorflow(prepared):
    data_dir = prepared["array_record"]
    ds = load_dataset(f"tfds:{NAME}", data_dir=data_dir)
    assert _records(ds.train) == _expected(prepared["splits"]["train"])
    assert _records(ds.test) == _expected(prepared["splits"]["test"])
    info = ds.info
    assert (info.num_train, info.num_test, info.num_classes, info.image_shape) == (
        40,
        16,
        10,
        (8, 8, 1),
    )
    assert info.class_names == tuple(DIGIT_NAMES)
    # Statistics: all 40 train images (<= stats_images), equal to the exact histogram ones.
    exact_mean, exact_std = channel_stats(prepared["splits"]["train"][0])
    np.testing.assert_allclose(info.mean, exact_mean, rtol=1e-12)
    np.testing.assert_allclose(info.std, exact_std, rtol=1e-9)
    assert info.stats_source == "all 40 train images"
    assert (info.flip, info.flip_reason) == (False, "auto: 1-channel images")

    train, evaluation, info = make_loaders(
        {"name": f"tfds:{NAME}", "data_dir": data_dir, "num_threads": 0},
        seed=0,
        global_batch_size=8,
        process_index=0,
        process_count=1,
    )
    assert next(train)["image"].shape == (8, 8, 8, 1)
    assert sum(int(b["mask"].sum()) for b in evaluation) == 16
    line = describe_data(info)
    assert line.startswith(f"data tfds:{NAME} (array_record files in {data_dir}/{NAME}/1.0.0)")
    assert "40 train / 16 test, 8x8x1, 10 classes" in line
    assert "flip off (auto: 1-channel images)" in line and "(all 40 train images)" in line
    assert [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")] == []


def test_flip_and_statistics_come_from_the_data_or_the_config(prepared, monkeypatch):
    data_dir = prepared["array_record"]
    things = load_dataset("tfds:tiny_things", data_dir=data_dir).info
    assert things.flip and things.flip_reason == "auto: colour images of non-character classes"
    numbers = load_dataset("tfds:tiny_house_numbers", data_dir=data_dir).info
    assert (numbers.flip, numbers.flip_reason) == (False, "auto: classes are single characters")

    # A sample of stats_images evenly spaced images; then the cache is used (no decoding).
    sampled = load_dataset("tfds:tiny_things", data_dir=data_dir, stats_images=4).info
    assert sampled.stats_source == "4 of 9 train images, evenly spaced"
    assert sampled.mean != things.mean
    monkeypatch.setattr(sources_module, "_sampled_stats", lambda *a: pytest.fail("recomputed"))
    assert load_dataset("tfds:tiny_things", data_dir=data_dir, stats_images=4).info == sampled

    config = {
        "name": "tfds:tiny_things",
        "data_dir": data_dir,
        "flip": "false",
        "mean": (0.5,),
        "std": (0.25, 0.5, 1.0),
        "stats_images": 2,  # 2: not in the cache
    }
    _, _, info = make_loaders(config, seed=0, global_batch_size=3, process_index=0, process_count=1)
    assert (info.flip, info.flip_reason) == (False, "config data.flip")
    assert (info.mean, info.std) == ((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    line = describe_data(info)
    assert "flip off (config data.flip)" in line
    stats = "mean (0.5000, 0.5000, 0.5000) std (0.2500, 0.5000, 1.0000) (config data.mean/std)"
    assert stats in line
    # The same fields for the in-memory datasets (number = one value for every channel).
    digits = {"name": "digits", "mean": 0.5, "std": 0.25, "flip": True, "num_threads": 0}
    _, _, info = make_loaders(digits, seed=0, global_batch_size=8, process_index=0, process_count=1)
    assert (info.mean, info.std, info.flip) == ((0.5,), (0.25,), True)
    assert "flip on (config data.flip); normalise mean (0.5000) std (0.2500)" in describe_data(info)
    for bad, field in (
        ({"mean": (0.5, 0.5), "std": (1.0,)}, "'mean'"),
        ({"mean": (0.5,), "std": (0.0,)}, "'std'"),
        ({"mean": (0.5,), "std": ()}, "'mean' and 'std'"),
        ({"mean": "0.5", "std": 0.5}, "'mean' must be a number or a list"),
    ):
        with pytest.raises(ValueError, match=field):
            make_loaders(
                {**config, **bad}, seed=0, global_batch_size=3, process_index=0, process_count=1
            )


def test_varying_image_size_needs_image_size(prepared):
    data_dir = prepared["array_record"]
    assert load_dataset("tfds:tiny_varying", data_dir=data_dir).info.image_shape == (None, None, 3)
    spec = {"name": "tfds:tiny_varying", "data_dir": data_dir, "num_threads": 0}
    _error(
        lambda: make_loaders(spec, seed=0, global_batch_size=2, process_index=0, process_count=1),
        "tfds:tiny_varying",
        "image_size",
    )
    train, evaluation, info = make_loaders(
        {**spec, "image_size": 6}, seed=0, global_batch_size=2, process_index=0, process_count=1
    )
    assert next(train)["image"].shape == (2, 6, 6, 3)
    assert next(iter(evaluation))["image"].shape == (2, 6, 6, 3)
    assert "6x" not in describe_data(info) and "?x?x3" in describe_data(info)


# ----------------------------------------------------------------------------- errors


def test_misspelled_or_unprepared_name_is_one_line_with_the_closest_prepared(prepared):
    data_dir = prepared["array_record"]
    message = _error(
        lambda: load_dataset("tfds:tiny_digit", data_dir=data_dir),
        "tfds:tiny_digit",
        f"data_dir {data_dir}",
        "closest prepared there: tiny_digits",
    )
    assert "TFDS has no builder" in message and "abstract_reasoning" not in message
    # A registered TFDS name that is not prepared here: the prepare command.
    _error(
        lambda: load_dataset("tfds:mnist", data_dir=data_dir),
        "not prepared in data_dir",
        "convjax data prepare mnist --data_dir=",
        data_dir,
    )
    _error(
        lambda: load_dataset(f"tfds:{NAME}", data_dir=data_dir + "/nowhere"),
        f"data_dir {data_dir}/nowhere",
        "that directory does not exist",
    )
    assert "tiny_digits:1.0.0" in prepared_datasets(data_dir)
    assert closest_prepared("zzz", data_dir) == []
    assert closest_prepared("tiny_thing", data_dir)[0] == "tiny_things"


def test_cli_prints_one_line_for_a_misspelled_name(prepared, tmp_path, capsys):
    from convjax.__main__ import main

    status = main(
        [
            "convjax",
            "train",
            "--config=default",
            "--config.dataset=tfds:tiny_digts",
            f"--config.data.data_dir={prepared['array_record']}",
            f"--workdir={tmp_path / 'run'}",
            "--config.progress=False",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("convjax: error: dataset 'tfds:tiny_digts' is not prepared")
    assert "tiny_digits" in err[0]


def test_opencv_notice_is_silenced():
    sources_module._silence_opencv_notice()
    logger = logging.getLogger("absl")
    make = lambda msg: logging.LogRecord("absl", logging.WARNING, __file__, 1, msg, None, None)
    assert not logger.filter(make("OpenCV is not installed. We recommend using OpenCV ..."))
    assert logger.filter(make("something else"))


# ----------------------------------------------------------------------------- TFRecord


def test_tfrecord_dataset_is_converted_once_next_to_its_files(prepared, tmp_path, capsys):
    data_dir, version_dir = _tfrecord_copy(prepared, tmp_path)
    tfrecord_files = sorted(f for f in os.listdir(version_dir) if ".tfrecord-" in f)
    assert tfrecord_files and not has_array_record(version_dir)
    ds = load_dataset(f"tfds:{NAME}", data_dir=data_dir)
    err = capsys.readouterr().err
    assert f"converting {NAME} (56 records" in err and "converted 56 records" in err
    assert "convert to ArrayRecord" in err  # the progress bar
    assert _records(ds.train) == _expected(prepared["splits"]["train"])
    assert _records(ds.test) == _expected(prepared["splits"]["test"])
    with open(os.path.join(version_dir, "dataset_info.json")) as f:
        info_json = json.load(f)
    assert info_json["fileFormat"] == "tfrecord"
    assert info_json["alternativeFileFormats"] == ["array_record"]
    assert sorted(f for f in os.listdir(version_dir) if ".tfrecord-" in f) == tfrecord_files
    assert not [f for f in os.listdir(version_dir) if f.startswith(".")]  # no temp files left
    assert "(converted once from tfrecord)" in ds.info.origin

    # Once: the second load reads the ArrayRecord files and prints nothing.
    stamps = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    again = load_dataset(f"tfds:{NAME}", data_dir=data_dir)
    assert capsys.readouterr().err == ""
    assert stamps == {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in stamps}
    assert again.info.origin == f"array_record files in {version_dir} (converted from tfrecord)"
    assert [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")] == []


def test_tfrecord_conversion_into_another_directory_leaves_the_data_untouched(
    prepared, tmp_path, monkeypatch
):
    data_dir, version_dir = _tfrecord_copy(prepared, tmp_path)
    before = _contents(version_dir)
    mirror = tmp_path / "mirror"
    train, _, info = make_loaders(
        {
            "name": f"tfds:{NAME}",
            "data_dir": data_dir,
            "array_record_dir": str(mirror),
            "num_threads": 0,
        },
        seed=0,
        global_batch_size=8,
        process_index=0,
        process_count=1,
    )
    assert next(train)["image"].shape == (8, 8, 8, 1)
    assert _contents(version_dir) == before
    out = mirror / NAME / "1.0.0"
    assert info.origin == f"array_record files in {out} (converted once from tfrecord)"
    assert json.loads((out / "dataset_info.json").read_text())["fileFormat"] == "array_record"
    # The mirror is a prepared dataset in its own right.
    assert _records(load_dataset(f"tfds:{NAME}", data_dir=str(mirror)).test) == _expected(
        prepared["splits"]["test"]
    )

    # A data dir that is not writable (simulated: tests may run as root) -> the cache dir.
    monkeypatch.setattr(tfds_files, "_writable", lambda path: False)
    ds = load_dataset(f"tfds:{NAME}", data_dir=data_dir)
    cached = tmp_path / "cache" / "tfds" / NAME / "1.0.0"
    assert ds.info.origin == f"array_record files in {cached} (converted once from tfrecord)"
    assert _contents(version_dir) == before


def test_tfrecord_without_conversion_stops_with_the_command(prepared, tmp_path):
    data_dir, _ = _tfrecord_copy(prepared, tmp_path)
    _error(
        lambda: make_loaders(
            {"name": f"tfds:{NAME}", "data_dir": data_dir, "convert_tfrecord": False},
            seed=0,
            global_batch_size=8,
            process_index=0,
            process_count=1,
        ),
        "is TFRecord",
        f"convjax data convert {NAME} --data_dir={data_dir}",
    )


def test_convert_command(prepared, tmp_path, capsys):
    from convjax.__main__ import main

    data_dir, version_dir = _tfrecord_copy(prepared, tmp_path)
    assert main(["convjax", "data"]) == 2 and "convjax data convert" in capsys.readouterr().err
    argv = ["convjax", "data", "convert", f"tfds:{NAME}", "--data_dir", data_dir, "--verify"]
    assert main(argv) == 0
    assert "read it with --config.data.data_dir=" + data_dir in capsys.readouterr().out
    assert has_array_record(version_dir)
    assert convert_main([NAME, "--data_dir", data_dir]) == 0
    assert "already has ArrayRecord files" in capsys.readouterr().out
    assert convert_main(["tiny_digts", "--data_dir", data_dir]) == 1
    assert "closest prepared there: tiny_digits" in capsys.readouterr().err


def test_conversion_checks_record_counts_and_checksums(prepared, tmp_path):
    data_dir, version_dir = _tfrecord_copy(prepared, tmp_path)
    shard = os.path.join(version_dir, f"{NAME}-test.tfrecord-00000-of-00001")
    records = list(read_tfrecord(shard, verify_checksums=True))
    assert len(records) == 16
    write_tfrecord(shard, records[:-1])  # one record short of dataset_info.json
    _error(
        lambda: convert_to_array_record(version_dir, progress=False),
        shard,
        "holds 15 records but dataset_info.json says 16",
    )
    assert not [f for f in os.listdir(version_dir) if "array_record" in f and "test" in f]
    data = bytearray(open(shard, "rb").read())
    data[20] ^= 0xFF  # inside the first payload
    open(shard, "wb").write(bytes(data))
    _error(
        lambda: list(read_tfrecord(shard, verify_checksums=True)),
        shard,
        "record 0 fails its data checksum",
    )


# ----------------------------------------------------------------------------- TFRecord format


def test_tfrecord_framing_round_trip_and_corruption(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0 and masked_crc32c(b"") == 0xA282EAD8
    records = [b"", b"a", os.urandom(300), b"\x00" * 70000]
    path = tmp_path / "x.tfrecord"
    assert write_tfrecord(path, records) == 4
    assert list(read_tfrecord(path, verify_checksums=True)) == records
    raw = path.read_bytes()
    assert struct.unpack("<Q", raw[:8])[0] == 0 and len(raw) == sum(16 + len(r) for r in records)
    (tmp_path / "cut").write_bytes(raw[:-3])
    _error(lambda: list(read_tfrecord(tmp_path / "cut")), "truncated inside record 3")
    bad_length = bytearray(raw)
    bad_length[16 + 2] ^= 1  # the length of record 1
    (tmp_path / "bad").write_bytes(bytes(bad_length))
    _error(lambda: list(read_tfrecord(tmp_path / "bad")), "record 1 has a corrupt length")


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    records = [b"", b"abc", os.urandom(1000)]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for r in records:
            writer.write(r)
    write_tfrecord(tmp_path / "ours.tfrecord", records)
    assert (tmp_path / "tf.tfrecord").read_bytes() == (tmp_path / "ours.tfrecord").read_bytes()
