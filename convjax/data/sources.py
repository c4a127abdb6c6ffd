"""Random-access image classification sources and the dataset spec string.

Every source is a random-access sequence (``len(source)``, ``source[i]``) whose records are
``{"image": uint8 (H, W, C), "label": int}``; :mod:`convjax.data.pipeline` turns any of them into
shuffled, augmented, sharded, batched grain pipelines. Three kinds exist:

* ``"digits"`` -- scikit-learn's bundled 8x8 digits (no download): 1797 images, values 0..16
  rescaled to uint8 0..255, one channel, split once into 1437 train / 360 test images with a
  fixed seeded stratified split, so it behaves like a TFDS dataset with ``train``/``test``.
* ``"idx:<directory>"`` -- a directory of IDX files in the MNIST / Fashion-MNIST layout
  (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``), e.g.
  ``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist`` package.
* ``"tfds:<name>"`` -- any prepared TFDS image classification dataset, read with
  ``tfds.data_source`` (ArrayRecord random access; TensorFlow is never imported). A dataset
  prepared as TFRecord is converted to ArrayRecord once (:mod:`convjax.data.tfds_files`).

Bad data fails early with :class:`DataError` (a ``ValueError``) naming the dataset and the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from convjax.data.errors import DataError
from convjax.data.tfds_files import (
    _read_info,
    closest_prepared,
    convert_to_array_record,
    default_cache_dir,
    prepared_datasets,
)

__all__ = [
    "DEFAULT_STATS_IMAGES",
    "ArraySource",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "IDX_FILE_STEMS",
    "RecordSource",
    "TfdsSource",
    "auto_flip",
    "channel_stats",
    "check_stats",
    "digits_dataset",
    "find_tfds_builder",
    "find_tfds_version_dir",
    "idx_dataset",
    "load_dataset",
    "parse_spec",
    "read_idx",
    "tfds_data_dir",
    "tfds_dataset",
    "write_idx",
]

#: Bytes per element and numpy dtype (big-endian) for each IDX type code.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: File stems of the MNIST layout: split -> (images stem, labels stem). ``.gz`` is optional,
#: and the dotted variant (``train-images.idx3-ubyte``) is accepted too.
IDX_FILE_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Default number of train images (evenly spaced) from which the normalisation statistics of a
#: TFDS dataset are computed when the config gives none (``data.stats_images``; 0 = all).
DEFAULT_STATS_IMAGES = 10_000


class RecordSource(Protocol):
    """What the pipeline needs from a source: ``len`` and ``[i] -> {"image", "label"}``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (and, from ``make_loaders``, about the model input).

    Attributes:
      name: the spec string it was loaded from, e.g. ``"digits"`` or ``"tfds:cifar10"``.
      num_classes: labels are ints in ``[0, num_classes)``.
      image_shape: ``(H, W, C)`` of the stored uint8 images; ``H``/``W`` are ``None`` for
        datasets with images of varying size (then the pipeline needs ``image_size``).
      num_train: number of records in the train split.
      num_test: number of records in the evaluation split.
      mean: per-channel mean of ``image / 255`` used for normalisation (length C).
      std: per-channel standard deviation of ``image / 255`` (length C).
      flip: whether random horizontal flips are a valid augmentation (see :func:`auto_flip`;
        ``make_loaders`` replaces it by the value actually used).
      train_split: name of the split used for training.
      test_split: name of the split used for evaluation.
      input_shape: per-example shape the model receives after the pipeline: ``(H, W, C)`` for
        images, ``(L, C)`` for sequences. Equal to ``image_shape`` unless the pipeline resizes
        or flattens.
      sequence: ``"none"``, ``"flatten"`` (sMNIST-style) or ``"permute"`` (pMNIST-style).
      steps_per_epoch: train batches per epoch per process (set by ``make_loaders``; 0 before).
      flip_reason: why ``flip`` has its value, e.g. ``"auto: 1-channel images"``.
      stats_source: where ``mean``/``std`` came from, e.g. ``"all 60000 train images"``.
      origin: where the records are read from (files, format), for the run header.
      class_names: the label names when the dataset declares them (TFDS ``ClassLabel``).
    """

    name: str
    num_classes: int
    image_shape: tuple[int | None, int | None, int]
    num_train: int
    num_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    train_split: str = "train"
    test_split: str = "test"
    input_shape: tuple[int | None, ...] = ()
    sequence: str = "none"
    steps_per_epoch: int = 0
    flip_reason: str = ""
    stats_source: str = ""
    origin: str = ""
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.input_shape:
            object.__setattr__(self, "input_shape", tuple(self.image_shape))

    @property
    def num_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.image_shape[-1])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded dataset: train and evaluation sources plus their :class:`DatasetInfo`."""

    train: RecordSource
    test: RecordSource
    info: DatasetInfo


# --------------------------------------------------------------------------------------------
# In-memory sources (digits, IDX)
# --------------------------------------------------------------------------------------------


class ArraySource:
    """Random-access source over in-memory arrays.

    Args:
      images: uint8 array ``(N, H, W, C)``.
      labels: integer array ``(N,)`` with values in ``[0, num_classes)``.
      num_classes: number of classes (used to validate the labels).
      name: dataset name for error messages.
      origin: where the arrays came from (file path or description) for error messages.

    Example:
      >>> src = ArraySource(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), 2)
      >>> src[1]["image"].shape, src[1]["label"]
      ((4, 4, 1), 1)
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        *,
        name: str = "array",
        origin: str = "<arrays>",
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise DataError(
                f"dataset {name!r}: images from {origin} must be uint8, got dtype {images.dtype}"
            )
        if images.ndim != 4:
            raise DataError(
                f"dataset {name!r}: images from {origin} must have shape (N, H, W, C), "
                f"got shape {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"dataset {name!r}: labels from {origin} must be a 1-D integer array, "
                f"got shape {labels.shape} dtype {labels.dtype}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"dataset {name!r}: {origin} has {images.shape[0]} images but "
                f"{labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise DataError(f"dataset {name!r}: split from {origin} is empty (0 examples)")
        _check_label_range(labels, num_classes, name, origin)
        self.images = images
        self.labels = labels.astype(np.int64)
        self.num_classes = int(num_classes)
        self.name = name

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": int(self.labels[index])}

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Records ``indices`` at once: uint8 images ``(B, H, W, C)`` and labels ``(B,)``."""
        return self.images[indices], self.labels[indices]


def _check_label_range(labels: np.ndarray, num_classes: int, name: str, origin: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"dataset {name!r}: label {int(labels[i])} at index {i} in {origin} is out of "
            f"range [0, {num_classes}) ({bad.size} labels out of range)"
        )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``images / 255`` (float64 accumulation).

    Args:
      images: uint8 array ``(N, H, W, C)``.

    Returns:
      ``(mean, std)``: tuples of length C; std is floored at 1e-3 so normalisation stays finite
      for constant channels.

    Example:
      >>> channel_stats(np.full((1, 2, 2, 1), 255, np.uint8))
      ((1.0,), (0.001,))
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        # A 256-bin histogram per channel: exact, and no float copy of the whole dataset.
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var**0.5, 1e-3))
    return tuple(means), tuple(stds)


def auto_flip(num_channels: int, class_names: Sequence[str] = ()) -> tuple[bool, str]:
    """Whether random horizontal flips suit a dataset, judged from its data, not its name.

    Flips are on only for colour images (3 or 4 channels) whose classes are not single
    characters: 1-channel images (digits, characters, clothing and other MNIST-like sets,
    medical scans) and classes named ``"0"``..``"9"`` or ``"a"``..``"z"`` (SVHN, EMNIST) are
    orientation-sensitive or too small to gain from flips, so they default to off. This keeps
    every dataset the previous name list covered (MNIST, Fashion-MNIST, KMNIST, EMNIST,
    SVHN, binarized MNIST: off; CIFAR, ImageNet, Imagenette: on) and decides the same way for
    a renamed or custom copy. TFDS's default names of an unnamed ``ClassLabel`` are
    ``"0"``..``"N-1"``, so an unnamed colour dataset of at most 10 classes also defaults to
    off (the data cannot tell it from SVHN). Override with ``data.flip``.

    Args:
      num_channels: ``C`` of the ``(H, W, C)`` images.
      class_names: the label names, if the dataset declares them.

    Returns:
      ``(flip, reason)``, e.g. ``(False, "auto: 1-channel images")``.

    Example:
      >>> auto_flip(1)
      (False, 'auto: 1-channel images')
      >>> auto_flip(3, ["airplane", "automobile"])
      (True, 'auto: colour images of non-character classes')
    """
    if num_channels not in (3, 4):
        return False, f"auto: {num_channels}-channel images"
    if class_names and all(len(str(n).strip()) == 1 for n in class_names):
        return False, "auto: classes are single characters"
    return True, "auto: colour images of non-character classes"


# --------------------------------------------------------------------------------------------
# digits (embedded)
# --------------------------------------------------------------------------------------------

#: Size of the digits test split (of 1797): 1437 train / 360 test, like a 80/20 split.
DIGITS_NUM_TEST = 360
#: Seed of the stratified digits split. Fixed: the split is part of the dataset definition.
DIGITS_SPLIT_SEED = 0


def digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits as a train/test :class:`Dataset` (no download).

    Pixel values 0..16 are rescaled to uint8 ``round(v * 255 / 16)``; images are
    ``(8, 8, 1)``; 10 classes. The split is stratified and seeded (``DIGITS_SPLIT_SEED``), so it
    is the same on every machine: 1437 train and 360 test records.

    Example:
      >>> ds = digits_dataset()
      >>> len(ds.train), len(ds.test), ds.info.image_shape
      (1437, 360, (8, 8, 1))
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(labels.shape[0]),
        test_size=DIGITS_NUM_TEST,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    origin = "sklearn.datasets.load_digits()"
    train = ArraySource(
        images[idx_train], labels[idx_train], 10, name="digits", origin=f"{origin} [train]"
    )
    test = ArraySource(
        images[idx_test], labels[idx_test], 10, name="digits", origin=f"{origin} [test]"
    )
    mean, std = channel_stats(train.images)
    flip, flip_reason = auto_flip(1)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(8, 8, 1),
        num_train=len(train),
        num_test=len(test),
        mean=mean,
        std=std,
        flip=flip,
        flip_reason=flip_reason,
        stats_source=f"all {len(train)} train images",
        origin=origin,
    )
    return Dataset(train, test, info)


# --------------------------------------------------------------------------------------------
# IDX files (MNIST format)
# --------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike, *, name: str = "idx") -> np.ndarray:
    """Read one IDX file (gzip-compressed if its name ends in ``.gz``) into a numpy array.

    Format: 2 zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
    float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per dimension
    and the data in C order.

    Args:
      path: the file.
      name: dataset name for error messages.

    Returns:
      An array of the stored dtype (native byte order) and shape.

    Example:
      >>> write_idx("/tmp/x-idx1-ubyte", np.arange(3, dtype=np.uint8))
      >>> read_idx("/tmp/x-idx1-ubyte")
      array([0, 1, 2], dtype=uint8)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"dataset {name!r}: IDX file {path} does not exist")
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"dataset {name!r}: cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(
            f"dataset {name!r}: {path} is not an IDX file (bad magic number {data[:4].hex()!r}; "
            "expected 00 00 <type code> <ndim>)"
        )
    dtype = _IDX_TYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"dataset {name!r}: IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"dataset {name!r}: IDX file {path} declares shape {shape} ({expected} data bytes) "
            f"but holds {len(data) - header} data bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    The inverse of :func:`read_idx`; useful to build tiny test datasets.

    Example:
      >>> write_idx("/tmp/labels-idx1-ubyte.gz", np.array([3, 1], np.uint8))
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(
            f"write_idx: array dtype {array.dtype} has no IDX type code; expected one of "
            f"{sorted(str(d) for d in codes)}"
        )
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    path = os.fspath(path)
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + payload)


def _find_idx_file(directory: str, stem: str, name: str) -> str:
    dotted = stem.replace("-idx", ".idx", 1)
    candidates = [os.path.join(directory, s + ext) for s in (stem, dotted) for ext in ("", ".gz")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise DataError(
        f"dataset {name!r}: missing IDX file {os.path.join(directory, stem)}[.gz] "
        f"(looked for {', '.join(os.path.basename(c) for c in candidates)})"
    )


def _load_idx_split(directory: str, split: str, num_classes: int, name: str) -> ArraySource:
    image_stem, label_stem = IDX_FILE_STEMS[split]
    image_path = _find_idx_file(directory, image_stem, name)
    label_path = _find_idx_file(directory, label_stem, name)
    images = read_idx(image_path, name=name)
    labels = read_idx(label_path, name=name)
    if images.dtype != np.uint8:
        raise DataError(
            f"dataset {name!r}: images in {image_path} must be unsigned bytes (type 0x08), "
            f"got {images.dtype}"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(
            f"dataset {name!r}: images in {image_path} must have shape (N, H, W) or "
            f"(N, H, W, C), got {images.shape}"
        )
    # ArraySource checks label shape/dtype/range, image/label counts and emptiness.
    origin = f"{image_path} and {label_path}"
    return ArraySource(images, labels, num_classes, name=name, origin=origin)


def idx_dataset(directory: str | os.PathLike, *, num_classes: int = 10) -> Dataset:
    """A directory of IDX files in the MNIST layout as a train/test :class:`Dataset`.

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``; the
    ``train-images.idx3-ubyte`` spelling works too). Images ``(N, H, W)`` become
    ``(N, H, W, 1)``. Normalisation statistics come from all train images; flips follow
    :func:`auto_flip` (off for 1-channel images).

    Args:
      directory: e.g. ``/usr/share/datasets/fashion-mnist``.
      num_classes: labels must lie in ``[0, num_classes)``.

    Example:
      >>> ds = idx_dataset("/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
      >>> ds.info.image_shape, ds.info.num_train  # doctest: +SKIP
      ((28, 28, 1), 60000)
    """
    directory = os.fspath(directory)
    name = f"idx:{directory}"
    if not os.path.isdir(directory):
        raise DataError(f"dataset {name!r}: directory {directory} does not exist")
    train = _load_idx_split(directory, "train", num_classes, name)
    test = _load_idx_split(directory, "test", num_classes, name)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"dataset {name!r}: train images have shape {train.images.shape[1:]} but test "
            f"images have shape {test.images.shape[1:]}"
        )
    mean, std = channel_stats(train.images)
    h, w, c = (int(d) for d in train.images.shape[1:])
    flip, flip_reason = auto_flip(c)
    info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        image_shape=(h, w, c),
        num_train=len(train),
        num_test=len(test),
        mean=mean,
        std=std,
        flip=flip,
        flip_reason=flip_reason,
        stats_source=f"all {len(train)} train images",
        origin=f"IDX files in {directory}",
    )
    return Dataset(train, test, info)


# --------------------------------------------------------------------------------------------
# TFDS (ArrayRecord random access, no TensorFlow)
# --------------------------------------------------------------------------------------------


class TfdsSource:
    """Wraps a ``tfds.data_source`` split: records become ``{"image": uint8 (H, W, C), "label"}``.

    Each record is checked as it is read (image rank, dtype, channels, fixed size where the
    dataset declares one, label range); a bad record raises :class:`DataError` naming the
    dataset, the split and the record index.

    Args:
      data_source: what ``tfds.data_source(name, split=...)`` returned.
      name: spec string for error messages (``"tfds:<name>"``).
      split: split name for error messages.
      image_key: feature holding the image (from the dataset's ``supervised_keys``).
      label_key: feature holding the label.
      image_shape: declared ``(H, W, C)`` (``None`` for varying sizes).
      num_classes: number of classes.
    """

    def __init__(
        self,
        data_source: Sequence[Any],
        *,
        name: str,
        split: str,
        image_key: str,
        label_key: str,
        image_shape: tuple[int | None, int | None, int],
        num_classes: int,
    ) -> None:
        self.data_source = data_source
        self.name = name
        self.split = split
        self.image_key = image_key
        self.label_key = label_key
        self.image_shape = image_shape
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._convert(self.data_source[index], index)

    def get_batch(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Records ``indices``: a list of uint8 images ``(H, W, C)`` and int64 labels ``(B,)``
        (one random-access read per record; grain runs batches in parallel threads)."""
        converted = [self[int(i)] for i in indices]
        return [c["image"] for c in converted], np.array([c["label"] for c in converted])

    def _convert(self, record: Any, index: int) -> dict[str, Any]:
        where = f"dataset {self.name!r}: record {index} of split {self.split!r}"
        try:
            image = np.asarray(record[self.image_key])
            label = int(record[self.label_key])
        except KeyError as e:
            raise DataError(f"{where} has no feature {e}; it has {sorted(record)}") from e
        if image.dtype != np.uint8:
            raise DataError(f"{where}: image must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != self.image_shape[-1]:
            raise DataError(
                f"{where}: image must have shape (H, W, {self.image_shape[-1]}), got {image.shape}"
            )
        for got, want in zip(image.shape[:2], self.image_shape[:2]):
            if want is not None and got != want:
                raise DataError(
                    f"{where}: image shape {image.shape} differs from the declared "
                    f"{self.image_shape}"
                )
        if not 0 <= label < self.num_classes:
            raise DataError(f"{where}: label {label} is out of range [0, {self.num_classes})")
        return {"image": image, "label": label}


def _tfds_image_and_label_keys(info: Any, name: str) -> tuple[str, str]:
    keys = getattr(info, "supervised_keys", None)
    if isinstance(keys, (tuple, list)) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys[0], keys[1]
    if "image" in info.features and "label" in info.features:
        return "image", "label"
    raise DataError(
        f"dataset {name!r} is not an image classification dataset: no supervised keys and no "
        f"'image'/'label' features (features: {sorted(info.features)})"
    )


class _DropOpenCvNotice:
    """absl logging filter: drops TFDS's once-per-process "OpenCV is not installed" warning.

    Without OpenCV, TFDS decodes PNG/JPEG with Pillow, which gives the same pixels; installing
    ``opencv-python-headless`` makes TFDS use OpenCV instead (faster on large JPEG datasets).
    """

    def filter(self, record: Any) -> bool:
        return not str(getattr(record, "msg", "")).startswith("OpenCV is not installed")


_OPENCV_FILTER = _DropOpenCvNotice()


def _silence_opencv_notice() -> None:
    import logging

    logger = logging.getLogger("absl")
    if _OPENCV_FILTER not in logger.filters:
        logger.addFilter(_OPENCV_FILTER)


def tfds_data_dir(data_dir: str | None = None) -> str:
    """The TFDS data directory searched for ``tfds:`` datasets: ``data_dir`` (``~`` expanded),
    else TFDS's default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Example:
      >>> tfds_data_dir("~/data").endswith("/data")
      True
    """
    if data_dir:
        return os.path.expanduser(os.fspath(data_dir))
    from tensorflow_datasets.core import constants

    return os.path.expanduser(constants.get_default_data_dir())


def _prepared_hint(tfds_name: str, data_dir: str) -> str:

    if "://" not in data_dir and not os.path.isdir(data_dir):
        return "that directory does not exist; set data.data_dir"
    close = closest_prepared(tfds_name, data_dir)
    prepared = prepared_datasets(data_dir)
    if close:  # with their versions: a registered name may want a version not prepared
        return "closest prepared there: " + ", ".join(
            p for name in close for p in prepared if p.split(":")[0] == name
        )
    count = len(prepared)
    return (
        f"{count} datasets prepared there, none with a similar name"
        if count
        else ("nothing is prepared there")
    )


def find_tfds_builder(tfds_name: str, data_dir: str | None = None) -> Any:
    """The TFDS builder of a *prepared* dataset, or a one-line :class:`DataError`.

    ``tfds.builder`` is used as is: a registered name gets its builder class; any other name is
    looked up in ``data_dir`` as ``<name>[/<config>]/<version>/`` and read from its files
    (``features.json``, ``dataset_info.json``), so a custom dataset needs neither its builder
    code nor an import. A misspelled or unprepared name stops with one line naming the
    ``data_dir`` searched and the closest names prepared there (instead of TFDS's list of
    every registered dataset).

    Args:
      tfds_name: ``name[/config][:version]``.
      data_dir: see :func:`tfds_data_dir`.

    Example:
      >>> find_tfds_builder("fashion_mnis", "/data")  # doctest: +SKIP
      DataError: dataset 'tfds:fashion_mnis' is not prepared in data_dir /data and TFDS has no
      builder of that name (closest prepared there: fashion_mnist)
    """
    import tensorflow_datasets as tfds

    name = f"tfds:{tfds_name}"
    directory = tfds_data_dir(data_dir)
    try:
        builder = tfds.builder(tfds_name, data_dir=directory)
    except tfds.core.registered.DatasetNotFoundError:
        hint = _prepared_hint(tfds_name, directory)
        # `from None`: the TFDS error lists every registered dataset (~300 lines).
        raise DataError(
            f"dataset {name!r} is not prepared in data_dir {directory} and TFDS has no builder "
            f"of that name ({hint})"
        ) from None
    except Exception as e:  # bad config/version strings and the like
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(
            f"dataset {name!r}: TFDS cannot load it from data_dir {directory} "
            f"({type(e).__name__}: {first_line})"
        ) from None
    if not builder.is_prepared():
        base = tfds_name.split(":")[0]
        raise DataError(
            f"dataset {name!r} is not prepared in data_dir {directory} "
            f"({_prepared_hint(tfds_name, directory)}); prepare it once with `convjax data prepare "
            f"{base} --data_dir={directory}` in an environment with TensorFlow "
            "(pip install 'convjax[prepare]'; reading needs no TensorFlow)"
        )
    return builder


def find_tfds_version_dir(tfds_name: str, data_dir: str | None = None) -> str:
    """The ``<data_dir>/<name>[/<config>]/<version>`` directory of a prepared dataset (see
    :func:`find_tfds_builder` for the errors).

    Example:
      >>> find_tfds_version_dir("mnist", "~/tensorflow_datasets")  # doctest: +SKIP
      '/home/me/tensorflow_datasets/mnist/3.0.1'
    """
    return os.fspath(find_tfds_builder(tfds_name, data_dir).data_dir)


def _file_formats(version_dir: str) -> list[str]:
    """File formats listed in ``dataset_info.json``: the main one first, then alternatives."""
    from etils import epath

    info = _read_info(epath.Path(version_dir))
    return [info.get("fileFormat") or "tfrecord", *info.get("alternativeFileFormats", [])]


def tfds_dataset(
    tfds_name: str,
    *,
    data_dir: str | None = None,
    train_split: str = "train",
    test_split: str | None = None,
    convert_tfrecord: bool = True,
    array_record_dir: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stats_images: int = DEFAULT_STATS_IMAGES,
) -> Dataset:
    """A prepared TFDS image classification dataset through ``tfds.data_source`` (no TF).

    The dataset must already be prepared in ``data_dir`` (nothing is downloaded here). Random
    access needs ArrayRecord files; a dataset prepared in TFRecord (the default of ``tfds
    build`` / ``tfds.load``) is converted once, without TensorFlow and with a progress bar, by
    :func:`convjax.data.tfds_files.convert_to_array_record` -- next to its TFRecord files when
    that directory is writable, else under ``array_record_dir``.

    Normalisation statistics are ``mean``/``std`` when given, else computed from up to
    ``stats_images`` evenly spaced train images (all of them if the split is no larger). The
    flip default comes from :func:`auto_flip` (image channels and class names). Both choices
    and their reasons are in the returned info (see :func:`convjax.data.describe_data`).

    Args:
      tfds_name: TFDS name, optionally with config/version, e.g. ``"cifar10"``.
      data_dir: TFDS data directory (default: TFDS's own, ``~/tensorflow_datasets``).
      train_split: split to train on.
      test_split: split to evaluate on; ``None`` picks ``"test"``, else ``"validation"``.
      convert_tfrecord: convert a TFRecord-only dataset (True) or stop with a one-line error
        giving the conversion command (False).
      array_record_dir: where to write the converted copy (``None``: next to the TFRecord files
        if writable, else ``~/.cache/convjax/tfds``).
      mean, std: per-channel statistics of ``image / 255`` (length C, std > 0), or ``None``.
      stats_images: how many train images the statistics are computed from (0 = all).

    Example:
      >>> ds = tfds_dataset("cifar10", data_dir="~/tensorflow_datasets")  # doctest: +SKIP
      >>> ds.info.image_shape, ds.info.flip  # doctest: +SKIP
      ((32, 32, 3), True)
    """
    import tensorflow_datasets as tfds

    _silence_opencv_notice()
    name = f"tfds:{tfds_name}"
    builder = find_tfds_builder(tfds_name, data_dir)
    version_dir = os.fspath(builder.data_dir)
    formats = _file_formats(version_dir)
    origin = f"{formats[0]} files in {version_dir}"
    if not {"array_record", "parquet"} & set(formats):
        if "tfrecord" not in formats:
            raise DataError(
                f"dataset {name!r} in {version_dir} is stored as {formats}; convjax reads "
                "array_record, parquet, or tfrecord (converted once)"
            )
        if not convert_tfrecord:
            raise DataError(
                f"dataset {name!r} in {version_dir} is TFRecord, which has no random access; "
                f"convert it once with `convjax data convert {tfds_name} "
                f"--data_dir={tfds_data_dir(data_dir)}` (no TensorFlow needed) or set "
                "data.convert_tfrecord=True"
            )

        version_dir, _ = convert_to_array_record(version_dir, array_record_dir)
        origin = f"array_record files in {version_dir} (converted once from tfrecord)"
    elif formats[0] not in ("array_record", "parquet"):
        readable = next(f for f in formats if f in ("array_record", "parquet"))
        origin = f"{readable} files in {version_dir} (converted from {formats[0]})"
    # Read from the files, not through the builder class: TFDS's code builders do not restore
    # `alternativeFileFormats` from dataset_info.json, and custom datasets have no class here.
    builder = tfds.builder_from_directory(version_dir)
    info = builder.info
    image_key, label_key = _tfds_image_and_label_keys(info, name)
    image_feature = info.features[image_key]
    label_feature = info.features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(
            f"dataset {name!r}: feature {label_key!r} is not a ClassLabel with num_classes"
        )
    shape = tuple(image_feature.shape)
    if len(shape) != 3 or shape[-1] is None:
        raise DataError(
            f"dataset {name!r}: feature {image_key!r} must be an image of shape (H, W, C) with "
            f"a fixed C, got {shape}"
        )
    image_shape = (shape[0], shape[1], int(shape[2]))
    available = set(info.splits.keys()) if info.splits else set()
    if test_split is None:
        test_split = (
            "validation" if "test" not in available and "validation" in available else "test"
        )

    def open_split(split: str) -> TfdsSource:
        if available and split.split("[")[0] not in available:
            raise DataError(
                f"dataset {name!r}: no split {split!r} (available: {sorted(available)})"
            )
        try:
            source = builder.as_data_source(split=split)
        except Exception as e:  # missing or unreadable shards
            raise DataError(
                f"dataset {name!r}: cannot open split {split!r} in {version_dir}: "
                f"{type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ) from e
        wrapped = TfdsSource(
            source,
            name=name,
            split=split,
            image_key=image_key,
            label_key=label_key,
            image_shape=image_shape,
            num_classes=num_classes,
        )
        if len(wrapped) == 0:
            raise DataError(f"dataset {name!r}: split {split!r} is empty (0 examples)")
        wrapped[0]  # fail now, not in a pipeline thread, if records do not fit the features
        return wrapped

    train = open_split(train_split)
    test = open_split(test_split)
    if (mean is None) != (std is None):
        raise ValueError("tfds_dataset: give both mean and std, or neither")
    if mean is not None:
        mean, std = check_stats(mean, std, image_shape[-1])
        stats_source = "given"
    else:
        mean, std, used = _cached_stats(
            version_dir,
            train_split,
            stats_images,
            lambda: _sampled_stats(train, image_shape[-1], stats_images),
        )
        stats_source = (
            f"all {used} {train_split} images"
            if used == len(train)
            else f"{used} of {len(train)} {train_split} images, evenly spaced"
        )
    class_names = tuple(str(n) for n in (getattr(label_feature, "names", None) or ()))
    flip, flip_reason = auto_flip(image_shape[-1], class_names)
    dataset_info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        image_shape=image_shape,
        num_train=len(train),
        num_test=len(test),
        mean=tuple(mean),
        std=tuple(std),
        flip=flip,
        train_split=train_split,
        test_split=test_split,
        flip_reason=flip_reason,
        stats_source=stats_source,
        origin=origin,
        class_names=class_names,
    )
    return Dataset(train, test, dataset_info)


def check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate explicit normalisation statistics: ``mean``/``std`` of length ``channels`` (or
    1, broadcast), finite, ``std > 0``. Returns them as tuples of floats of length ``channels``.

    Example:
      >>> check_stats([0.5], [0.25], 3)
      ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    """
    out = []
    for field, values in (("mean", mean), ("std", std)):
        try:
            values = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise ValueError(
                f"data config {field!r} must be a list of numbers, got {values!r}"
            ) from None
        if len(values) == 1:
            values = values * channels
        if len(values) != channels or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"data config {field!r} must hold 1 or {channels} finite numbers (one per image "
                f"channel), got {list(values)}"
            )
        if field == "std" and min(values) <= 0:
            raise ValueError(f"data config 'std' must be > 0, got {list(values)}")
        out.append(values)
    return out[0], out[1]


def _cached_stats(
    version_dir: str | None, split: str, limit: int, compute: Callable[[], Any]
) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """``compute()`` once per (dataset files, split, limit): the result is kept as a small json
    under ``default_cache_dir()/stats`` (decoding 10k images takes ~10 s on one CPU core), keyed
    by the dataset directory and its ``dataset_info.json``. ``version_dir=None``: no cache."""
    import hashlib
    import json

    if version_dir is None:
        return compute()

    try:
        with open(os.path.join(version_dir, "dataset_info.json"), "rb") as f:
            info_bytes = f.read()
    except OSError:
        return compute()
    key = hashlib.sha1(
        b"\0".join(
            [
                os.path.realpath(version_dir).encode(),
                info_bytes,
                split.encode(),
                str(limit).encode(),
            ]
        )
    ).hexdigest()[:20]
    path = os.path.join(default_cache_dir(), "stats", f"{key}.json")
    try:
        with open(path) as f:
            cached = json.load(f)
        return tuple(cached["mean"]), tuple(cached["std"]), int(cached["images"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    mean, std, used = compute()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(
                {"dataset": version_dir, "split": split, "mean": mean, "std": std, "images": used},
                f,
            )
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: recompute next time
    return mean, std, used


def _sampled_stats(
    source: RecordSource, channels: int, limit: int = DEFAULT_STATS_IMAGES
) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Per-channel mean/std of ``image / 255`` over up to ``limit`` evenly spaced records (0 =
    all; images may differ in size: exact integer sums per pixel). Returns ``(mean, std,
    number of images used)``."""
    n = len(source)
    count = n if limit <= 0 else min(n, limit)
    indices = np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    pixels = 0
    for i in indices:
        x = source[int(i)]["image"].reshape(-1, channels).astype(np.int64)
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
        pixels += x.shape[0]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0)) / 255.0
    std = np.maximum(std, 1e-3)
    return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in std), int(indices.size)


# --------------------------------------------------------------------------------------------
# Spec strings
# --------------------------------------------------------------------------------------------

_CACHE: dict[tuple[Any, ...], Dataset] = {}
_CACHE_LOCK = threading.Lock()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a dataset spec into ``(kind, argument)``.

    ``"digits"`` -> ``("digits", "")``; ``"idx:/some/dir"`` -> ``("idx", "/some/dir")``;
    ``"tfds:cifar10"`` -> ``("tfds", "cifar10")``.

    Example:
      >>> parse_spec("tfds:cifar10")
      ('tfds', 'cifar10')
    """
    if not isinstance(spec, str):
        raise TypeError(f"dataset spec must be a str, got {type(spec).__name__} ({spec!r})")
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "digits" and not sep:
        return "digits", ""
    if kind in ("idx", "tfds") and arg:
        return kind, arg
    raise DataError(
        f"unknown dataset {spec!r}: expected 'digits', 'idx:<directory of IDX files>' or "
        "'tfds:<tfds name>'"
    )


def load_dataset(
    spec: str,
    *,
    data_dir: str | None = None,
    train_split: str = "train",
    test_split: str | None = None,
    num_classes: int = 10,
    cache: bool = True,
    **tfds_options: Any,
) -> Dataset:
    """Load a dataset from its spec string.

    Args:
      spec: ``"digits"``, ``"idx:<directory>"`` or ``"tfds:<name>"``.
      data_dir: TFDS data directory (``tfds:`` only).
      train_split: TFDS train split (``tfds:`` only; digits/IDX have ``train``).
      test_split: TFDS evaluation split (``tfds:`` only; ``None`` = ``test`` or
        ``validation``).
      num_classes: number of classes of an IDX dataset (labels are checked against it).
      cache: reuse an already loaded in-memory dataset (digits/IDX) with the same arguments.
      **tfds_options: further :func:`tfds_dataset` keywords (``convert_tfrecord``,
        ``array_record_dir``, ``mean``, ``std``, ``stats_images``; ``tfds:`` only).

    Returns:
      A :class:`Dataset` with ``train``/``test`` random-access sources and its info.

    Example:
      >>> ds = load_dataset("digits")
      >>> ds.info.num_classes, ds.train[0]["image"].dtype
      (10, dtype('uint8'))
    """
    kind, arg = parse_spec(spec)
    if kind == "tfds":
        return tfds_dataset(
            arg, data_dir=data_dir, train_split=train_split, test_split=test_split, **tfds_options
        )
    if tfds_options:
        raise TypeError(f"load_dataset: {sorted(tfds_options)} apply to 'tfds:' datasets only")
    key = (kind, os.path.abspath(arg) if arg else "", num_classes)
    if kind == "idx":
        # A changed directory must be re-read: the key includes the files' mtimes and sizes.
        key += (
            tuple(
                (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                for e in sorted(os.scandir(arg), key=lambda e: e.name)
                if e.is_file()
            )
            if os.path.isdir(arg)
            else ()
        )
    with _CACHE_LOCK:
        if cache and key in _CACHE:
            return _CACHE[key]
    dataset = digits_dataset() if kind == "digits" else idx_dataset(arg, num_classes=num_classes)
    if cache:
        with _CACHE_LOCK:
            _CACHE[key] = dataset
    return dataset
