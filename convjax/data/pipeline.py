"""grain pipelines: per-host sharding, per-epoch shuffling, augmentation, batching.

The trainer needs one call, :func:`make_loaders`::

    train_iter, eval_loader, info = make_loaders(
        config.data, seed=config.seed, global_batch_size=config.batch_size)
    batch = next(train_iter)        # {"image": float32 (B, H, W, C), "label": int32 (B,)}
    state = train_iter.get_state()  # small dict: save it with the checkpoint
    train_iter.set_state(state)     # exact resume: the next batch is the one that followed
    for batch in eval_loader:       # adds "mask": bool (B,); every example counted once
        ...

How the train stream is laid out (``n`` examples, ``P`` processes, per-process batch ``B``,
global batch ``G = P * B``, ``S = n // G`` steps per epoch):

* epoch ``e`` visits the split in the order of a permutation ``perm_e`` seeded by
  ``(seed, e)``; the last ``n - S * G`` positions are dropped
  (drop_remainder), so each epoch has ``S`` full global batches;
* global batch ``s`` of epoch ``e`` is ``perm_e[s * G : (s + 1) * G]``; process ``p`` reads only
  its contiguous slice ``[p * B, (p + 1) * B)`` of it. Concatenating the process batches in
  process order gives exactly the global batch that one process with batch ``G`` would read;
* augmentation draws for global batch ``s`` come from one generator seeded by
  ``(seed, e, s)``, drawn for all ``G`` examples and sliced per process, so the stream is a
  pure function of ``(seed, step)``: independent of ``P``, of thread timing, and of where it
  was resumed;
* each element of the ``grain.MapDataset`` is one per-process batch (read, augmented and
  normalised vectorised, ~10x faster on CPU than per-example maps); ``to_iter_dataset``
  prefetches batches in reader threads and its iterator state is the next step number.

Evaluation covers the split exactly once: ``ceil(n / G)`` batches on every process (the same
count everywhere, so cross-host collectives line up); positions past ``n`` are padding with
``mask = False``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import grain
import jax
import ml_collections
import numpy as np

from convjax.data.augment import (
    augment_batch,
    center_crop,
    flip_left_right,
    normalize,
    random_resized_crop,
    resize,
    resize_shorter_side,
)
from convjax.data.sequential import SEQUENCE_MODES, pixel_permutation, sequence_shape, to_sequence
from convjax.data.sources import (
    DEFAULT_STATS_IMAGES,
    DataError,
    DatasetInfo,
    RecordSource,
    check_stats,
    load_dataset,
    parse_spec,
)
from convjax.data.spec import DataSpec

__all__ = [
    "describe_data",
    "EvalLoader",
    "Loaders",
    "ImageTransform",
    "default_config",
    "eval_loader",
    "make_loaders",
    "train_dataset",
]

#: Eval resize for varying-size images: shorter side to ``image_size / EVAL_CROP_FRACTION``,
#: then the central ``image_size`` square (the usual ImageNet 224/256 protocol).
EVAL_CROP_FRACTION = 0.875


def default_config() -> Any:
    """The ``config.data`` block understood by :func:`make_loaders` (an ml_collections
    ``ConfigDict``; every field can be overridden from the command line).

    Fields:
      name: dataset spec: ``"digits"``, ``"idx:<directory>"`` or ``"tfds:<name>"``.
      data_dir: TFDS data directory searched for ``tfds:`` names (``""`` = TFDS default,
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      convert_tfrecord: a ``tfds:`` dataset prepared as TFRecord is converted once to
        ArrayRecord (True) or stops with the conversion command (False).
      array_record_dir: where that conversion writes (``""``: next to the TFRecord files if
        writable, else ``~/.cache/convjax/tfds``).
      train_split / eval_split: TFDS split names (``eval_split=""``: ``test`` or
        ``validation``).
      num_classes: classes of an IDX dataset (labels are validated against it).
      augment: ``"auto"`` (on for images, off for sequences), ``"true"`` or ``"false"``.
      crop_padding: zero padding of the random crop; -1 = ``max(1, round(H / 8))``
        (4 for 32x32 and 28x28, 1 for 8x8 digits).
      flip: ``"auto"`` (from the data: on for colour images of non-character classes, see
        :func:`convjax.data.auto_flip`), ``"true"``, ``"false"``.
      mean / std: per-channel normalisation of ``image / 255`` (1 or C numbers each); empty =
        computed from the train images.
      stats_images: how many evenly spaced train images a ``tfds:`` dataset's statistics are
        computed from (0 = all; digits and IDX always use all).
      image_size: 0 keeps the stored size; > 0 resizes to ``(image_size, image_size)``
        (required for datasets of varying image size, e.g. ImageNet).
      sequence: ``"none"``, ``"flatten"`` (sMNIST) or ``"permute"`` (pMNIST).
      permutation_seed: seed of the fixed pMNIST permutation.
      eval_batch_size: global eval batch size (0 = the training global batch size).
      num_epochs: 0 = an endless train iterator; > 0 = stop after that many epochs.
      num_threads: grain reader threads per process (0 = read in the calling thread).
      prefetch_batches: batches grain prepares ahead per process.

    Example:
      >>> cfg = default_config()
      >>> cfg.name, cfg.sequence
      ('digits', 'none')
    """

    return ml_collections.ConfigDict(
        {
            "name": "digits",
            "data_dir": "",
            "train_split": "train",
            "eval_split": "",
            "num_classes": 10,
            "augment": "auto",
            "crop_padding": -1,
            "flip": "auto",
            "mean": (),
            "std": (),
            "stats_images": DEFAULT_STATS_IMAGES,
            "convert_tfrecord": True,
            "array_record_dir": "",
            "image_size": 0,
            "sequence": "none",
            "permutation_seed": 0,
            "eval_batch_size": 0,
            "num_epochs": 0,
            "num_threads": 2,
            "prefetch_batches": 4,
        }
    )


def _tristate(value: Any, field: str) -> bool | None:
    """``"auto"`` -> None; bools and their usual spellings -> bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return None
        if v in ("true", "yes", "on", "1"):
            return True
        if v in ("false", "no", "off", "0"):
            return False
    raise ValueError(f"data config {field!r} must be 'auto', 'true' or 'false', got {value!r}")


def _stats_field(value: Any, field: str) -> tuple[Any, ...]:
    """``data.mean`` / ``data.std``: a number or a sequence of numbers; empty = not given."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(
            f"data config {field!r} must be a number or a list of numbers, got {value!r}"
        )
    return tuple(value)


def _int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, got {value!r}")
    return int(value)


class ImageTransform:
    """A batch of uint8 record images -> the float32 model input: (resize) -> (augment) ->
    normalise -> (flatten / permute). Vectorised over the batch for fixed-size images.

    Args:
      info: the dataset's :class:`DatasetInfo` (shape, mean/std).
      train: training transform (random crop / flip / resized crop) if True and ``augment``.
      augment: apply random augmentation (training only).
      crop_padding: random-crop zero padding (fixed-size images).
      flip: random horizontal flips.
      image_size: 0 = stored size; > 0 = resize to a square of this side.
      sequence: ``"none"``, ``"flatten"`` or ``"permute"``.
      permutation_seed: seed of the ``"permute"`` order.

    Example:
      >>> from convjax.data.sources import load_dataset
      >>> info = load_dataset("digits").info
      >>> t = ImageTransform(info, train=False, sequence="flatten")
      >>> t(np.zeros((2, 8, 8, 1), np.uint8), None).shape
      (2, 64, 1)
    """

    def __init__(
        self,
        info: DatasetInfo,
        *,
        train: bool,
        augment: bool = True,
        crop_padding: int = 0,
        flip: bool = False,
        image_size: int = 0,
        sequence: str = "none",
        permutation_seed: int = 0,
    ) -> None:
        if sequence not in SEQUENCE_MODES:
            raise ValueError(f"sequence must be one of {SEQUENCE_MODES}, got {sequence!r}")
        h, w, c = info.image_shape
        self.variable = h is None or w is None
        if self.variable and image_size <= 0:
            raise DataError(
                f"dataset {info.name!r} has images of varying size {info.image_shape}; set "
                "image_size > 0 in the data config"
            )
        self.info = info
        self.train = train
        self.augment = augment and train
        self.crop_padding = crop_padding
        self.flip = flip
        self.image_size = image_size
        self.sequence = sequence
        self.output_image_shape = (image_size, image_size, c) if image_size > 0 else (h, w, c)
        self.output_shape = sequence_shape(self.output_image_shape, sequence)
        length = self.output_image_shape[0] * self.output_image_shape[1]
        self.permutation = (
            pixel_permutation(length, permutation_seed) if sequence == "permute" else None
        )

    def __call__(
        self,
        images: np.ndarray | list[np.ndarray],
        rng: np.random.Generator | None,
        *,
        total: int | None = None,
        start: int = 0,
    ) -> np.ndarray:
        """Transform ``images`` (uint8 ``(B, H, W, C)``, or a list of ``(H, W, C)`` for
        varying sizes). Random draws are made for a batch of ``total`` images of which these
        are ``[start, start + B)`` (see :func:`convjax.data.augment.augment_batch`)."""
        b = len(images)
        total = b if total is None else total
        size = self.image_size
        if self.variable:
            if self.augment:
                children = rng.spawn(total)[start : start + b]
                batch = np.stack(
                    [random_resized_crop(x, size, r) for x, r in zip(images, children)]
                )
                if self.flip:
                    batch = flip_left_right(batch, (rng.random(total) < 0.5)[start : start + b])
            else:
                eval_size = round(size / EVAL_CROP_FRACTION)
                batch = np.stack(
                    [center_crop(resize_shorter_side(x, eval_size), size) for x in images]
                )
        else:
            batch = np.asarray(images)
            if size > 0 and batch.shape[1:3] != (size, size):
                batch = np.stack([resize(x, size, size) for x in batch])
            if self.augment:
                batch = augment_batch(
                    batch,
                    rng,
                    crop_padding=self.crop_padding,
                    flip=self.flip,
                    total=total,
                    start=start,
                )
        x = normalize(batch, self.info.mean, self.info.std)
        if self.sequence != "none":
            x = to_sequence(x, self.permutation)
        return x


def _read_batch(source: RecordSource, indices: np.ndarray) -> tuple[Any, np.ndarray]:
    """Images (array or list) and labels of ``indices``, batched where the source can."""
    get_batch = getattr(source, "get_batch", None)
    if get_batch is not None:
        return get_batch(indices)
    records = [source[int(i)] for i in indices]
    images = [np.asarray(r["image"]) for r in records]
    if all(x.shape == images[0].shape for x in images):
        images = np.stack(images)
    return images, np.array([int(r["label"]) for r in records])


class _TrainBatch:
    """Local step ``k`` of process ``p`` -> its slice of global batch ``k`` (see module doc)."""

    def __init__(
        self,
        source: RecordSource,
        transform: ImageTransform,
        *,
        seed: int,
        batch_size: int,
        process_index: int,
        process_count: int,
        steps_per_epoch: int,
        with_index: bool,
    ) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.n = len(source)
        self.batch_size = batch_size
        self.global_batch = batch_size * process_count
        self.offset = process_index * batch_size
        self.steps_per_epoch = steps_per_epoch
        self.with_index = with_index
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the split (seeded by ``(seed, epoch)``;
        the two most recent epochs are cached, safely across grain's reader threads)."""
        with self._lock:
            perm = self._permutations.get(epoch)
            if perm is None:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0, epoch]))
                perm = rng.permutation(self.n)
                self._permutations[epoch] = perm
                for old in sorted(self._permutations)[:-2]:
                    del self._permutations[old]
            return perm

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        epoch, step = divmod(int(k), self.steps_per_epoch)
        first = step * self.global_batch + self.offset
        indices = self.permutation(epoch)[first : first + self.batch_size]
        images, labels = _read_batch(self.source, indices)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, epoch, step]))
        out = {
            "image": self.transform(images, rng, total=self.global_batch, start=self.offset),
            "label": labels.astype(np.int32),
        }
        if self.with_index:
            out["index"] = indices.astype(np.int64)
        return out


def train_dataset(
    source: RecordSource,
    transform: ImageTransform,
    *,
    seed: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    read_options: grain.ReadOptions | None = None,
    with_index: bool = False,
    name: str = "dataset",
) -> tuple[grain.IterDataset, int]:
    """The training pipeline of one process (see the module docstring for the layout).

    A ``grain.MapDataset`` over global step numbers whose element ``k`` is this process's
    slice of global batch ``k`` (read, augmented and normalised as one vectorised batch),
    turned into a prefetching ``grain.IterDataset``.

    Args:
      source: random-access train records ``{"image": uint8 (H, W, C), "label": int}``.
      transform: a training :class:`ImageTransform`.
      seed: non-negative int; fixes shuffling and augmentation.
      batch_size: per-process batch size ``B`` (global batch / process_count).
      process_index / process_count: this process and how many there are.
      num_epochs: ``None`` = endless; otherwise the stream ends after that many epochs.
      read_options: grain threading / prefetch (default: 2 threads, 4 batches ahead).
      with_index: also yield ``"index"``: int64 ``(B,)`` record indices (for tests/debugging).
      name: dataset name for error messages.

    Returns:
      ``(dataset, steps_per_epoch)``. ``iter(dataset)`` yields
      ``{"image": float32 (B, *input_shape), "label": int32 (B,)}`` and supports
      ``get_state()`` / ``set_state()``.

    Example:
      >>> from convjax.data.sources import load_dataset
      >>> ds = load_dataset("digits")
      >>> t = ImageTransform(ds.info, train=True, crop_padding=1)
      >>> pipe, steps = train_dataset(ds.train, t, seed=0, batch_size=32)
      >>> next(iter(pipe))["image"].shape, steps
      ((32, 8, 8, 1), 44)
    """
    seed = _int(seed, "seed", 0)
    batch_size = _int(batch_size, "batch_size", 1)
    process_count = _int(process_count, "process_count", 1)
    process_index = _int(process_index, "process_index", 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index must be < process_count={process_count}, got {process_index}"
        )
    n = len(source)
    global_batch = batch_size * process_count
    steps_per_epoch = n // global_batch
    if steps_per_epoch == 0:
        raise DataError(
            f"dataset {name!r}: the train split has {n} examples, fewer than one global batch "
            f"of {global_batch} ({process_count} processes x {batch_size})"
        )
    if num_epochs is None:
        length = (2**62 // steps_per_epoch) * steps_per_epoch
    else:
        length = _int(num_epochs, "num_epochs", 1) * steps_per_epoch
    make_batch = _TrainBatch(
        source,
        transform,
        seed=seed,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        steps_per_epoch=steps_per_epoch,
        with_index=with_index,
    )
    ds = grain.MapDataset.range(length).map(make_batch)
    options = read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    return ds.to_iter_dataset(options), steps_per_epoch


class _EvalBatch:
    """Local eval step ``k`` of process ``p`` -> its slice of global eval batch ``k``, padded
    past the end of the split."""

    def __init__(
        self,
        source: RecordSource,
        transform: ImageTransform,
        *,
        batch_size: int,
        process_index: int,
        process_count: int,
        with_index: bool,
    ) -> None:
        self.source = source
        self.transform = transform
        self.n = len(source)
        self.batch_size = batch_size
        self.global_batch = batch_size * process_count
        self.offset = process_index * batch_size
        self.with_index = with_index
        blank = np.zeros((1, *transform.output_image_shape), np.uint8)
        self.pad_image = transform(blank, None)[0]

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        first = int(k) * self.global_batch + self.offset
        positions = np.arange(first, first + self.batch_size)
        mask = positions < self.n
        valid = positions[mask]
        image = np.broadcast_to(self.pad_image, (self.batch_size, *self.pad_image.shape)).copy()
        label = np.zeros(self.batch_size, np.int32)
        if valid.size:
            images, labels = _read_batch(self.source, valid)
            image[: valid.size] = self.transform(images, None)
            label[: valid.size] = labels
        out = {"image": image, "label": label, "mask": mask}
        if self.with_index:
            out["index"] = np.where(mask, positions, -1).astype(np.int64)
        return out


@dataclasses.dataclass
class EvalLoader:
    """Re-iterable evaluation batches of one process; each ``iter()`` starts from the top.

    Yields ``{"image": float32 (B, *input_shape), "label": int32 (B,), "mask": bool (B,)}``.
    Every process yields ``num_batches = ceil(n / (B * process_count))`` batches; over all
    processes every example appears exactly once with ``mask = True``; padding rows have
    ``mask = False`` and label 0. Weight per-example metrics by ``mask`` (and divide by the
    mask sum, or by ``num_examples``).

    Attributes:
      source: the eval records.
      transform: the eval :class:`ImageTransform`.
      batch_size: per-process batch size ``B``.
      process_index / process_count: the process layout.
      read_options: grain threading / prefetch.
      with_index: also yield ``"index"`` (record index, -1 for padding).
    """

    source: RecordSource
    transform: ImageTransform
    batch_size: int
    process_index: int = 0
    process_count: int = 1
    read_options: grain.ReadOptions | None = None
    with_index: bool = False

    @property
    def num_examples(self) -> int:
        """Examples in the split (the sum of ``mask`` over all processes)."""
        return len(self.source)

    @property
    def num_batches(self) -> int:
        """Batches per process (the same on every process)."""
        return math.ceil(len(self.source) / (self.batch_size * self.process_count))

    def __len__(self) -> int:
        return self.num_batches

    def dataset(self) -> grain.IterDataset:
        """The underlying grain pipeline."""
        make_batch = _EvalBatch(
            self.source,
            self.transform,
            batch_size=self.batch_size,
            process_index=self.process_index,
            process_count=self.process_count,
            with_index=self.with_index,
        )
        ds = grain.MapDataset.range(self.num_batches).map(make_batch)
        options = self.read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
        return ds.to_iter_dataset(options)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.dataset())


def eval_loader(
    source: RecordSource,
    transform: ImageTransform,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    read_options: grain.ReadOptions | None = None,
    with_index: bool = False,
) -> EvalLoader:
    """Build an :class:`EvalLoader` after checking the arguments.

    Example:
      >>> from convjax.data.sources import load_dataset
      >>> ds = load_dataset("digits")
      >>> loader = eval_loader(ds.test, ImageTransform(ds.info, train=False), batch_size=100)
      >>> len(loader), sum(int(b["mask"].sum()) for b in loader)
      (4, 360)
    """
    batch_size = _int(batch_size, "batch_size", 1)
    process_count = _int(process_count, "process_count", 1)
    process_index = _int(process_index, "process_index", 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index must be < process_count={process_count}, got {process_index}"
        )
    return EvalLoader(
        source, transform, batch_size, process_index, process_count, read_options, with_index
    )


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def describe_data(info: Any) -> str:
    """One line for the run header: what is read, from where, and the per-dataset choices.

    Says where the records come from (files and format, or the in-memory source), the split
    sizes and image shape, whether random flips are used and why (``auto: ...`` from the data
    or ``config data.flip``), and the normalisation statistics and what they were computed
    from. Works on any object with :class:`DatasetInfo`-like attributes (missing ones are
    left out).

    Args:
      info: the :class:`DatasetInfo` returned by :func:`make_loaders`.

    Returns:
      e.g. ``"data digits (sklearn.datasets.load_digits()): 1437 train / 360 test, 8x8x1,
      10 classes; flip off (auto: 1-channel images); normalise mean (0.3...) std (0.4...)
      (all 1437 train images)"``.

    Example:
      >>> _, _, info = make_loaders("digits", seed=0, global_batch_size=64,
      ...                           process_index=0, process_count=1)
      >>> describe_data(info).split(";")[1]
      ' flip off (auto: 1-channel images)'
    """
    get = lambda field, default=None: getattr(info, field, default)
    text = f"data {get('name', '?')}"
    if get("origin"):
        text += f" ({get('origin')})"
    parts = []
    if get("num_train") is not None and get("num_test") is not None:
        parts.append(f"{get('num_train')} train / {get('num_test')} test")
    if get("image_shape"):
        parts.append("x".join("?" if d is None else str(d) for d in get("image_shape")))
    if get("num_classes"):
        parts.append(f"{get('num_classes')} classes")
    text += ": " + ", ".join(parts) if parts else ""
    if get("flip") is not None:
        reason = f" ({get('flip_reason')})" if get("flip_reason") else ""
        text += f"; flip {'on' if get('flip') else 'off'}{reason}"
    if get("mean") is not None and get("std") is not None:
        source = f" ({get('stats_source')})" if get("stats_source") else ""
        text += (
            f"; normalise mean {_numbers(tuple(get('mean')))} std {_numbers(tuple(get('std')))}"
            f"{source}"
        )
    return text


class Loaders(NamedTuple):
    """What :func:`make_loaders` returns (unpacks as ``train, eval, info``)."""

    train: grain.DatasetIterator
    eval: EvalLoader
    info: DatasetInfo


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, DataSpec):
        return config.to_dict()
    defaults = dict(default_config())
    if config is None:
        return defaults
    if isinstance(config, str):
        return {**defaults, "name": config}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(
            f"data config must be a ConfigDict, a mapping or a dataset spec str, got "
            f"{type(config).__name__}"
        )
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown data config field(s) {unknown}; known fields: {sorted(defaults)}"
        )
    return {**defaults, **dict(config)}


def make_loaders(
    config: Any,
    *,
    seed: int,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    dataset: str | None = None,
) -> Loaders:
    """Train iterator, eval loader and dataset info for this process: the trainer's entry.

    Args:
      config: the ``config.data`` block (see :func:`default_config` for every field), a plain
        mapping with a subset of those fields, or just a dataset spec string.
      seed: non-negative int; fixes the train shuffle and augmentation stream.
      global_batch_size: examples per step over all processes; must be divisible by
        ``process_count``. Each process gets ``global_batch_size // process_count`` per batch
        (the trainer splits that over its local devices).
      process_index / process_count: default ``jax.process_index()`` / ``jax.process_count()``.
      dataset: overrides ``config.name`` (for a trainer whose top-level config has
        ``config.dataset``).

    Returns:
      ``Loaders(train, eval, info)``:

      * ``train``: an endless (or ``num_epochs``-long) grain iterator; ``next(train)`` is
        ``{"image": float32 (B, *info.input_shape), "label": int32 (B,)}``;
        ``train.get_state()`` is a small JSON-able dict and ``train.set_state(state)`` resumes
        exactly (the next batch is bit-identical to the one an uninterrupted run would get).
        Save it with the checkpoint, e.g. with orbax
        ``grain.checkpoint.CheckpointSave(train)`` / ``CheckpointRestore(train)``.
      * ``eval``: :class:`EvalLoader`, re-iterable; batches add ``"mask"``: bool ``(B,)``.
        ``len(eval)`` batches on every process; the masks cover the split exactly once.
      * ``info``: :class:`DatasetInfo` with ``num_classes``, ``input_shape`` (the per-example
        model input: ``(H, W, C)`` or ``(L, C)`` for sequences), ``steps_per_epoch``,
        ``num_train``, ``num_test``, mean/std.

    Example:
      >>> train, evaluation, info = make_loaders("digits", seed=0, global_batch_size=64,
      ...                                        process_index=0, process_count=1)
      >>> next(train)["image"].shape, info.num_classes, info.steps_per_epoch
      ((64, 8, 8, 1), 10, 22)
    """
    cfg = _config_dict(config)
    if dataset is not None:
        cfg["name"] = dataset
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    process_count = _int(process_count, "process_count", 1)
    process_index = _int(process_index, "process_index", 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index must be < process_count={process_count}, got {process_index}"
        )
    global_batch_size = _int(global_batch_size, "global_batch_size", 1)
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be divisible by "
            f"process_count={process_count}"
        )
    eval_global = _int(cfg["eval_batch_size"], "data config 'eval_batch_size'", 0)
    eval_global = eval_global or global_batch_size
    if eval_global % process_count:
        raise ValueError(
            f"eval_batch_size={eval_global} must be divisible by process_count={process_count}"
        )
    sequence = cfg["sequence"]
    if sequence not in SEQUENCE_MODES:
        raise ValueError(
            f"data config 'sequence' must be one of {SEQUENCE_MODES}, got {sequence!r}"
        )
    image_size = _int(cfg["image_size"], "data config 'image_size'", 0)
    crop_padding = _int(cfg["crop_padding"], "data config 'crop_padding'", -1)
    num_epochs = _int(cfg["num_epochs"], "data config 'num_epochs'", 0)
    num_threads = _int(cfg["num_threads"], "data config 'num_threads'", 0)
    prefetch = _int(cfg["prefetch_batches"], "data config 'prefetch_batches'", 1)
    augment = _tristate(cfg["augment"], "augment")
    flip = _tristate(cfg["flip"], "flip")
    convert_tfrecord = _tristate(cfg["convert_tfrecord"], "convert_tfrecord")
    stats_images = _int(cfg["stats_images"], "data config 'stats_images'", 0)
    mean, std = _stats_field(cfg["mean"], "mean"), _stats_field(cfg["std"], "std")
    if bool(mean) != bool(std):
        raise ValueError(
            f"data config 'mean' and 'std' must both be set or both empty, got mean={mean} "
            f"std={std}"
        )

    tfds_options = {}
    if parse_spec(cfg["name"])[0] == "tfds":
        tfds_options = dict(
            convert_tfrecord=convert_tfrecord is not False,
            array_record_dir=cfg["array_record_dir"] or None,
            mean=mean or None,
            std=std or None,
            stats_images=stats_images,
        )
    loaded = load_dataset(
        cfg["name"],
        data_dir=cfg["data_dir"] or None,
        train_split=cfg["train_split"],
        test_split=cfg["eval_split"] or None,
        num_classes=_int(cfg["num_classes"], "data config 'num_classes'", 1),
        **tfds_options,
    )
    info = loaded.info
    if mean:
        mean, std = check_stats(mean, std, info.num_channels)
        info = dataclasses.replace(info, mean=mean, std=std, stats_source="config data.mean/std")
    if flip is not None:
        info = dataclasses.replace(info, flip=flip, flip_reason="config data.flip")
    augment = (sequence == "none") if augment is None else augment
    if not augment:
        info = dataclasses.replace(info, flip=False, flip_reason="augmentation off")
    flip = info.flip
    if crop_padding < 0:
        height = image_size or info.image_shape[0] or 0
        crop_padding = max(1, round(height / 8))
    transform_args = dict(
        crop_padding=crop_padding,
        flip=flip,
        image_size=image_size,
        sequence=sequence,
        permutation_seed=int(cfg["permutation_seed"]),
    )
    train_transform = ImageTransform(info, train=True, augment=augment, **transform_args)
    eval_transform = ImageTransform(info, train=False, **transform_args)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    train_ds, steps_per_epoch = train_dataset(
        loaded.train,
        train_transform,
        seed=seed,
        batch_size=global_batch_size // process_count,
        process_index=process_index,
        process_count=process_count,
        num_epochs=num_epochs or None,
        read_options=options,
        name=info.name,
    )
    evaluation = eval_loader(
        loaded.test,
        eval_transform,
        batch_size=eval_global // process_count,
        process_index=process_index,
        process_count=process_count,
        read_options=options,
    )
    info = dataclasses.replace(
        info,
        input_shape=train_transform.output_shape,
        sequence=sequence,
        steps_per_epoch=steps_per_epoch,
    )
    return Loaders(iter(train_ds), evaluation, info)
