"""Sources: embedded digits, IDX files, TFDS record checks, spec strings, errors."""

import gzip
import os
import struct
from collections import Counter

import numpy as np
import pytest

from convjax.data import (
    DataError,
    channel_stats,
    digits_dataset,
    idx_dataset,
    load_dataset,
    parse_spec,
    read_idx,
    write_idx,
)

# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_dtypes_and_split_sizes(digits):
    assert (len(digits.train), len(digits.test)) == (1437, 360)
    info = digits.info
    assert (info.num_train, info.num_test, info.num_classes) == (1437, 360, 10)
    assert info.image_shape == info.input_shape == (8, 8, 1)
    assert info.flip is False
    record = digits.train[5]
    assert record["image"].dtype == np.uint8 and record["image"].shape == (8, 8, 1)
    assert isinstance(record["label"], int) and 0 <= record["label"] < 10


def test_digits_split_is_a_stratified_partition_of_sklearn_digits(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    expected = Counter(
        (np.round(img * 255 / 16).astype(np.uint8).tobytes(), int(t))
        for img, t in zip(raw.images, raw.target)
    )
    got = Counter(
        (src[i]["image"].tobytes(), src[i]["label"])
        for src in (digits.train, digits.test)
        for i in range(len(src))
    )
    assert got == expected  # every sklearn image exactly once, values scaled to 0..255
    assert max(int(digits.train[i]["image"].max()) for i in range(50)) == 255
    test_counts = np.bincount([digits.test[i]["label"] for i in range(360)], minlength=10)
    all_counts = np.bincount(raw.target, minlength=10)
    np.testing.assert_allclose(test_counts, all_counts * 360 / 1797, atol=1.0)


def test_digits_is_deterministic_and_stats_match_numpy(digits):
    again = digits_dataset()
    np.testing.assert_array_equal(again.train.images, digits.train.images)
    np.testing.assert_array_equal(again.test.labels, digits.test.labels)
    x = digits.train.images.astype(np.float64) / 255.0
    np.testing.assert_allclose(digits.info.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(digits.info.std, [x.std()], rtol=1e-12)


def test_channel_stats_per_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 4, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    x = images.astype(np.float64).reshape(-1, 3) / 255
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-12)


# ----------------------------------------------------------------------------- IDX


def _reference_idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written independently with struct (uint8 data only)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes(order="C")


def _write_mnist_dir(path, train_images, train_labels, test_images, test_labels, gz=(True, False)):
    path.mkdir(parents=True, exist_ok=True)
    for (split, images, labels), compressed in zip(
        (("train", train_images, train_labels), ("t10k", test_images, test_labels)), gz
    ):
        ext = ".gz" if compressed else ""
        write_idx(path / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(path / f"{split}-labels-idx1-ubyte{ext}", labels)
    return path


@pytest.fixture
def tiny_idx(tmp_path):
    rng = np.random.default_rng(1)
    arrays = (
        rng.integers(0, 256, (13, 5, 6), dtype=np.uint8),
        rng.integers(0, 4, 13, dtype=np.uint8),
        rng.integers(0, 256, (7, 5, 6), dtype=np.uint8),
        rng.integers(0, 4, 7, dtype=np.uint8),
    )
    return _write_mnist_dir(tmp_path / "mnistlike", *arrays), arrays


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_and_encoding(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 256, (3, 4, 2), dtype=np.uint8)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, array)
    raw = gzip.open(path).read() if suffix else path.read_bytes()
    assert raw == _reference_idx_bytes(array)
    got = read_idx(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, array)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / f"f{suffix}", floats)
    np.testing.assert_array_equal(read_idx(tmp_path / f"f{suffix}"), floats)


def test_idx_dataset_gz_and_raw_files(tiny_idx):
    directory, (tr_x, tr_y, te_x, te_y) = tiny_idx
    ds = load_dataset(f"idx:{directory}", num_classes=4, cache=False)
    assert (len(ds.train), len(ds.test)) == (13, 7)
    assert ds.info.image_shape == (5, 6, 1) and ds.info.num_classes == 4
    assert ds.info.name == f"idx:{directory}" and ds.info.flip is False
    for i in range(13):
        np.testing.assert_array_equal(ds.train[i]["image"][..., 0], tr_x[i])
        assert ds.train[i]["label"] == int(tr_y[i])
    np.testing.assert_array_equal(ds.test[6]["image"][..., 0], te_x[6])
    np.testing.assert_allclose(ds.info.mean, [tr_x.mean() / 255], rtol=1e-12)


def test_idx_dotted_names_and_spec_cache_tracks_file_changes(tmp_path, tiny_idx):
    _, (tr_x, tr_y, te_x, te_y) = tiny_idx
    d = tmp_path / "dotted"
    d.mkdir()
    write_idx(d / "train-images.idx3-ubyte", tr_x)
    write_idx(d / "train-labels.idx1-ubyte", tr_y)
    write_idx(d / "t10k-images.idx3-ubyte", te_x)
    write_idx(d / "t10k-labels.idx1-ubyte", te_y)
    assert len(load_dataset(f"idx:{d}", num_classes=4).train) == 13
    write_idx(d / "t10k-images.idx3-ubyte", te_x[:3])
    write_idx(d / "t10k-labels.idx1-ubyte", te_y[:3])
    assert len(load_dataset(f"idx:{d}", num_classes=4).test) == 3


def _error(fn, *names):
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    for name in names:
        assert str(name) in message, message
    return message


def test_idx_errors_name_dataset_and_file(tmp_path, tiny_idx):
    directory, (tr_x, tr_y, te_x, te_y) = tiny_idx
    spec = f"idx:{directory}"
    _error(lambda: idx_dataset(tmp_path / "nope"), "nope", "does not exist")
    # labels out of range (num_classes=3 but labels reach 3)
    message = _error(lambda: idx_dataset(directory, num_classes=3), spec, "labels-idx1-ubyte")
    assert "out of range" in message
    # missing file
    (directory / "t10k-labels-idx1-ubyte").unlink()
    _error(lambda: idx_dataset(directory, num_classes=4), spec, "t10k-labels-idx1-ubyte")
    # count mismatch between images and labels
    write_idx(directory / "t10k-labels-idx1-ubyte", te_y[:5])
    _error(lambda: idx_dataset(directory, num_classes=4), "t10k-images", "7 images", "5 labels")
    # wrong shape: 2-D labels
    write_idx(directory / "t10k-labels-idx1-ubyte", np.zeros((7, 2), np.uint8))
    _error(lambda: idx_dataset(directory, num_classes=4), "t10k-labels", "1-D")
    # images that are not bytes
    write_idx(directory / "t10k-labels-idx1-ubyte", te_y)
    write_idx(directory / "t10k-images-idx3-ubyte", te_x.astype(np.int32))
    _error(lambda: idx_dataset(directory, num_classes=4), "t10k-images", "unsigned bytes")
    # empty split
    write_idx(directory / "t10k-images-idx3-ubyte", te_x[:0])
    write_idx(directory / "t10k-labels-idx1-ubyte", te_y[:0])
    _error(lambda: idx_dataset(directory, num_classes=4), "empty", "t10k-images")
    # train/test image shapes differ
    write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((7, 4, 6), np.uint8))
    write_idx(directory / "t10k-labels-idx1-ubyte", te_y)
    _error(lambda: idx_dataset(directory, num_classes=4), spec, "(4, 6, 1)")
    # corrupt files: bad magic, truncated data, broken gzip
    bad = directory / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x08\x03" + bytes(20)))
    _error(lambda: read_idx(bad, name="x"), "not an IDX file", str(bad))
    bad.write_bytes(gzip.compress(_reference_idx_bytes(tr_x)[:-5]))
    _error(lambda: read_idx(bad, name="x"), str(bad), "declares shape (13, 5, 6)")
    bad.write_bytes(b"not gzip at all")
    _error(lambda: read_idx(bad, name="x"), "cannot read", str(bad))


def test_spec_parsing_and_unknown_dataset():
    assert parse_spec("digits") == ("digits", "")
    assert parse_spec("idx:/a/b") == ("idx", "/a/b")
    assert parse_spec("tfds:cifar10") == ("tfds", "cifar10")
    for bad in ("mnist", "digits:x", "idx:", "tfds:", ""):
        _error(lambda bad=bad: load_dataset(bad), f"unknown dataset {bad!r}")
    with pytest.raises(TypeError, match="dataset spec must be a str"):
        parse_spec(3)


# ----------------------------------------------------------------------------- TFDS


# Real prepared TFDS datasets (ArrayRecord and TFRecord) are tested in test_tfds.py.


def test_tfds_records_are_checked_as_they_are_read():
    from convjax.data import TfdsSource

    records = [
        {"image": np.zeros((4, 4, 1), np.uint8), "label": 3},
        {"image": np.zeros((4, 4, 1), np.uint8), "label": 12},
        {"image": np.zeros((4, 5, 1), np.uint8), "label": 0},
        {"image": np.zeros((4, 4, 1), np.float32), "label": 0},
        {"pixels": np.zeros((4, 4, 1), np.uint8), "label": 0},
    ]
    src = TfdsSource(
        records,
        name="tfds:fake",
        split="train",
        image_key="image",
        label_key="label",
        image_shape=(4, 4, 1),
        num_classes=10,
    )
    assert src[0]["label"] == 3 and len(src) == 5
    _error(lambda: src[1], "tfds:fake", "record 1", "'train'", "label 12 is out of range")
    _error(lambda: src[2], "record 2", "(4, 5, 1)")
    _error(lambda: src[3], "record 3", "uint8")
    _error(lambda: src[4], "record 4", "no feature")


@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist"),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_debian_fashion_mnist_directory():
    ds = load_dataset("idx:/usr/share/datasets/fashion-mnist")
    assert (len(ds.train), len(ds.test), ds.info.image_shape) == (60000, 10000, (28, 28, 1))
    np.testing.assert_allclose(ds.info.mean, [0.2860], atol=1e-3)
    np.testing.assert_allclose(ds.info.std, [0.3530], atol=1e-3)
