"""Use a trained run: load the model, evaluate a split, predict classes, export the function.

A workdir written by :func:`convjax.train.loop.train` describes itself: ``config.json`` (the
resolved config), ``data_info.json`` (classes, input shape, normalisation) and
``checkpoints/``. From those alone:

* :func:`load_model` -- ``(model, spec)``: the NNX model with the checkpoint's parameters
  and statistics, in eval mode, ready for ``model(x)``;
* :func:`evaluate_workdir` -- loss / accuracy of the checkpoint on a split (``convjax eval``);
* :func:`predict` -- top-k classes of images, IDX or NumPy files (``convjax predict``);
* :func:`export_model` -- a serialized ``jax.export`` of the eval function (``convjax export``),
  reloadable with ``jax.export.deserialize`` without convjax.

The model is rebuilt from ``config.json``: an import-path model
(``--config.model=<module>:<factory>``, :mod:`convjax.models.spec`) needs its module importable
again; a model registered outside convjax (``convjax.models.register``, e.g. in a config file)
is registered again from ``model_source.json`` (:func:`register_workdir_model`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax._spec import ConfigError
from convjax.data import (
    DataError,
    DatasetInfo,
    ImageTransform,
    eval_loader,
    load_dataset,
    read_idx,
)
from convjax.models.registry import load_model_source
from convjax.train.checkpoint import Checkpointer
from convjax.train.config import resolve_spec
from convjax.train.distributed import xla_compiler_options
from convjax.train.loop import (
    CONFIG_FILE,
    DATA_INFO_FILE,
    MODEL_SOURCE_FILE,
    build_model,
    compute_dtype,
    eval_totals,
    make_data,
    make_optimizers,
)
from convjax.train.spec import TrainSpec
from convjax.train.state import ModelDef, TrainState, create_train_state, split_model
from convjax.train.step import make_eval_step

#: Where :func:`export_model` writes by default (inside the workdir).
EXPORT_DIR = "export"
EXPORT_FILE = "eval_fn.jax"
EXPORT_META = "signature.json"
#: File suffixes read as arrays by :func:`load_inputs` (everything else: an image file).
NUMPY_SUFFIXES = (".npy", ".npz")
IDX_MARKERS = ("-ubyte", ".idx")
#: :func:`load_inputs` warns when a file's pixels (on the 0..1 scale) have a standard deviation
#: outside [1/4, 4] x the training images', or a mean more than 3 training stds from theirs.
RANGE_STD_FACTOR = 4.0
RANGE_MEAN_STDS = 3.0
#: The splits ``convjax eval`` knows for datasets that are not ``tfds:``.
EVAL_SPLITS = ("test", "train")


class InputError(DataError):
    """An input of ``predict`` or ``eval`` that cannot be used; the message names it."""


def _warn(message: str) -> None:
    print(f"convjax: warning: {message}", file=sys.stderr, flush=True)


def _read(workdir: str, name: str) -> Any:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --workdir must be the directory of a convjax training run "
            "(it holds config.json, data_info.json and checkpoints/)."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def register_workdir_model(workdir: str) -> None:
    """Re-run the registration of a workdir's model when it was registered outside convjax
    (``model_source.json``, written by the trainer; :func:`convjax.models.load_model_source`).

    Raises:
      ConfigError: one line when the registering module or file cannot register it again.
    """
    path = os.path.join(os.path.abspath(workdir), MODEL_SOURCE_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        source = json.load(f)
    try:
        load_model_source(source)
    except ValueError as err:
        raise ConfigError(f"--workdir={workdir}: {err}") from None


def workdir_spec(workdir: str, config: TrainSpec | Mapping | None = None) -> TrainSpec:
    """The :class:`~convjax.train.spec.TrainSpec` of a workdir: its stored ``config.json``
    resolved (or ``config``, e.g. the stored config with command-line overrides).

    A model registered outside convjax is registered again first
    (:func:`register_workdir_model`); an import-path model's module must be importable.

    Example (a workdir holding only the ``config.json`` a run writes):
      >>> import json, os, tempfile
      >>> from convjax.train.config import config_to_json
      >>> run = tempfile.mkdtemp()
      >>> with open(os.path.join(run, "config.json"), "w") as f:
      ...     json.dump(config_to_json(resolve_spec({"num_steps": 10})), f)
      >>> spec = workdir_spec(run)
      >>> spec.model.name, spec.data.name, spec.run.num_steps
      ('digits_cnn', 'digits', 10)
      >>> workdir_spec(run, {"model": "resnet20", "num_steps": 10}).model.name
      'resnet20'
    """
    register_workdir_model(workdir)
    if config is None:
        config = _read(os.path.abspath(workdir), CONFIG_FILE)
    return resolve_spec(config)


def restore_run(
    workdir: str, step: int | None = None, *, config: TrainSpec | Mapping | None = None
) -> tuple[TrainSpec, dict, ModelDef, TrainState, int]:
    """``(spec, data_info, model_def, state, step)`` of a workdir's checkpoint.

    The model is rebuilt from ``config.json`` (or ``config``, see :func:`workdir_spec`)
    without a collective axis (single device).

    Raises:
      FileNotFoundError: not a training workdir, or no checkpoint in it.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> config, info, model_def, state, step = restore_run("runs/default")  # doctest: +SKIP
    """
    workdir = os.path.abspath(workdir)
    spec = workdir_spec(workdir, config)
    info = _read(workdir, DATA_INFO_FILE)
    model = build_model(
        spec,
        num_classes=int(info["num_classes"]),
        in_features=int(info["input_shape"][-1]),
        axis_name=None,
        input_shape=tuple(info["input_shape"]),
    )
    model_def, params, pad_params, stats, param_state = split_model(model)
    tx_task, _, tx_pad = make_optimizers(spec, param_state, max(spec.run.num_steps, 1))
    template = create_train_state(params, pad_params, stats, tx_task, tx_pad, spec.run.seed)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), enabled=False)
    try:
        restored = checkpointer.restore(template, step)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}.")
    state = jax.tree.map(jnp.asarray, restored[0])
    return spec, info, model_def, state, int(state.step)


def load_model(
    workdir: str, step: int | None = None, *, config: TrainSpec | Mapping | None = None
) -> tuple[nnx.Module, TrainSpec]:
    """The trained model of a workdir and its resolved spec: ``(model, spec)``.

    The model has the checkpoint's parameters, padding parameters and statistics, is in eval
    mode and maps normalised inputs ``(N, *data_info["input_shape"])`` (what the data
    pipeline yields) to logits ``(N, num_classes)``. With ``spec.run.dtype="bfloat16"`` on CPU,
    compile calls with :func:`logits_fn` (it passes the XLA workaround options).

    Args:
      workdir: a training run's directory.
      step: the checkpoint step (default: the newest).
      config: the run's config instead of the stored ``config.json`` (see
        :func:`workdir_spec`).

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> model, spec = load_model("runs/default")  # doctest: +SKIP
      >>> logits = model(images)  # images: float32 (N, 8, 8, 1), normalised
      ... # doctest: +SKIP
    """
    spec, _, model_def, state, _ = restore_run(workdir, step, config=config)
    model = model_def.merge(state.params, state.pad_params, state.stats, train=False)
    return model, spec


def logits_fn(model: nnx.Module, spec: TrainSpec) -> Any:
    """A jitted ``images -> logits`` of an eval-mode ``model`` (compute dtype of ``spec``,
    float32 logits), compiled with the options :func:`xla_compiler_options` gives.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> model, spec = load_model("runs/default")  # doctest: +SKIP
      >>> logits = logits_fn(model, spec)(images)  # doctest: +SKIP
    """
    dtype = compute_dtype(spec.run.dtype)
    graph, state = nnx.split(model)

    def apply(state: Any, images: jax.Array) -> jax.Array:
        x = images if dtype is None else images.astype(dtype)
        return nnx.merge(graph, state)(x).astype(jnp.float32)

    jitted = jax.jit(apply, compiler_options=xla_compiler_options(dtype) or None)
    return lambda images: jitted(state, jnp.asarray(images))


def split_loader(spec: TrainSpec, split: str) -> Any:
    """The evaluation loader of ``split``: ``"test"`` (the run's eval split), ``"train"``
    (the train split, without augmentation), or a TFDS split name (``tfds:`` datasets).

    Raises :class:`InputError` (a ``DataError``) listing the splits for an unknown one (TFDS
    datasets list their own).

    Example:
      >>> spec = resolve_spec({"num_steps": 10})          # digits, batch size 64
      >>> batch = next(iter(split_loader(spec, "train")))
      >>> {k: v.shape for k, v in batch.items()}
      {'image': (64, 8, 8, 1), 'label': (64,), 'mask': (64,)}
      >>> split_loader(spec, "valid")
      Traceback (most recent call last):
      ...
      convjax.train.inference.InputError: unknown split 'valid' for dataset 'digits'; ...
    """
    data = spec.data
    if split in ("test", ""):
        return make_data(spec).eval
    if split != "train":
        if not data.name.startswith("tfds:"):
            raise InputError(
                f"unknown split {split!r} for dataset {data.name!r}; its splits are "
                f"{', '.join(EVAL_SPLITS)} (--split=test is the run's evaluation split)."
            )
        return make_data(
            dataclasses.replace(spec, data=dataclasses.replace(data, eval_split=split))
        ).eval
    loaded = load_dataset(
        data.name,
        data_dir=data.data_dir or None,
        train_split=data.train_split,
        num_classes=data.num_classes,
    )
    transform = ImageTransform(
        loaded.info,
        train=False,
        image_size=data.image_size,
        sequence=data.sequence,
        permutation_seed=data.permutation_seed,
    )
    batch = data.eval_batch_size or spec.run.batch_size
    return eval_loader(loaded.train, transform, batch_size=batch)


def evaluate_workdir(
    workdir: str,
    split: str = "test",
    *,
    step: int | None = None,
    write: bool = True,
    config: TrainSpec | Mapping | None = None,
) -> dict[str, Any]:
    """Evaluate a workdir's checkpoint on ``split``; optionally write ``eval_<split>.json``.

    ``config`` replaces the stored ``config.json`` (e.g. with ``--config.data.data_dir``
    overridden; see :func:`workdir_spec`).

    Returns ``{"split", "step", "loss", "accuracy", "count"}`` (means over every example).

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> evaluate_workdir("runs/default")["accuracy"] > 0.9  # doctest: +SKIP
      True
    """
    spec, _, model_def, state, ckpt_step = restore_run(workdir, step, config=config)
    dtype = compute_dtype(spec.run.dtype)
    eval_step = jax.jit(
        make_eval_step(model_def, axis_name=None, compute_dtype=dtype),
        compiler_options=xla_compiler_options(dtype) or None,
    )
    batches = ({k: jnp.asarray(v) for k, v in b.items()} for b in split_loader(spec, split))
    totals = eval_totals(eval_step, state, batches)
    result = {"split": split, "step": ckpt_step, **totals, "count": int(totals["count"])}
    if write:
        path = os.path.join(os.path.abspath(workdir), f"eval_{split}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def _images_array(array: np.ndarray, channels: int, path: str) -> np.ndarray:
    """One or several images -> ``(N, H, W, C)`` (values untouched)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None, ..., None]
    elif a.ndim == 3:
        a = a[None] if a.shape[-1] == channels and channels > 1 else a[..., None]
    if a.ndim != 4 or a.shape[-1] != channels or a.size == 0:
        raise InputError(
            f"{path}: expected images (H, W), (N, H, W) or (N, H, W, {channels}), got shape "
            f"{np.shape(array)}."
        )
    return a


def _to_uint8(a: np.ndarray, path: str) -> np.ndarray:
    """Pixels -> uint8: uint8 as is; other numbers must be finite and in 0..255 (a file
    whose maximum is <= 1 is read as 0..1 and scaled by 255), else :class:`InputError`."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in "iuf":
        raise InputError(
            f"{path}: pixels of dtype {a.dtype}; expected uint8, integers in 0..255 or floats."
        )
    x = a.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        bad_images = int(np.sum(~finite.reshape(len(x), -1).all(axis=1)))
        raise InputError(
            f"{path}: {int(np.sum(~finite))} non-finite pixel value(s) (NaN or inf) in "
            f"{bad_images} of {len(x)} image(s); predict needs finite pixels."
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 255.0:
        outside = int(np.sum((x < 0.0) | (x > 255.0)))
        raise InputError(
            f"{path}: {outside} pixel value(s) outside 0..255 (min {lo:g}, max {hi:g}); predict "
            "reads uint8 or numbers in 0..255 (or 0..1), and does not clip."
        )
    if hi <= 1.0:
        x = x * 255.0  # floats (or 0/1 integers) in [0, 1]
    return np.round(x).astype(np.uint8)


def _resize_images(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 ``(N, H', W', C)`` -> ``(N, h, w, C)``, bilinear, each channel as an image file
    is resized (PIL)."""
    from PIL import Image

    return np.stack(
        [
            np.stack(
                [
                    np.asarray(Image.fromarray(img[..., c]).resize((w, h), Image.BILINEAR))
                    for c in range(img.shape[-1])
                ],
                axis=-1,
            )
            for img in a
        ]
    )


def _read_file(path: str, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """The raw array of one input file (see :func:`load_inputs`); :class:`InputError` if it
    cannot be read."""

    if os.path.isdir(path):
        raise InputError(
            f"{path} is a directory; predict takes image, IDX or .npy/.npz files "
            f"(e.g. {os.path.join(path, '*.png')})."
        )
    if not os.path.exists(path):
        raise InputError(f"no such input file: {path}")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file (0 bytes).")
    lower = path.lower()
    if lower.endswith(NUMPY_SUFFIXES):
        try:
            with open(path, "rb") as f:
                data = np.load(f, allow_pickle=False)
                if isinstance(data, np.lib.npyio.NpzFile):
                    if not data.files:
                        raise InputError(f"{path}: the .npz file holds no arrays.")
                    data = data[data.files[0]]
            return data
        except InputError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise InputError(f"{path}: not a readable NumPy file ({err}).") from None
    if any(marker in lower for marker in IDX_MARKERS):
        try:
            return read_idx(path, name="predict input")
        except DataError as err:
            raise InputError(str(err).removeprefix("dataset 'predict input': ")) from None
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: not a readable image file ({err}).") from None


def check_value_range(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> str | None:
    """Why uint8 ``images (N, H, W, C)`` look unlike the training images, or ``None``.

    The training data is summarised by ``data_info.json``'s per-channel ``mean`` / ``std`` of
    ``image / 255``. The images are suspicious when, in some channel, their pixels' standard
    deviation is outside ``[1/4, 4]`` x the training std (e.g. digits saved on their own
    0..16 scale: 1/16 of the contrast), or their mean is more than 3 training stds away.

    Example:
      >>> check_value_range(np.full((1, 8, 8, 1), 16, np.uint8), [0.305], [0.376])[:34]
      'pixel mean 0.063, std 0.000 (on th'
      >>> check_value_range(load_dataset("digits").test.images[:1], [0.305], [0.376]) is None
      True
    """
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    m, s = x.mean(axis=0), x.std(axis=0)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    far = (
        (s < std / RANGE_STD_FACTOR)
        | (s > std * RANGE_STD_FACTOR)
        | (np.abs(m - mean) > RANGE_MEAN_STDS * std)
    )
    if not far.any():
        return None
    fmt = lambda v: "/".join(f"{float(u):.3f}" for u in v)  # noqa: E731
    return (
        f"pixel mean {fmt(m)}, std {fmt(s)} (on the 0..1 scale), far from the training images' "
        f"mean {fmt(mean)}, std {fmt(std)}: are they on another scale (e.g. 0..16 instead of "
        "0..255 or 0..1), blank or inverted? The predictions may mean nothing."
    )


def load_inputs(
    paths: Sequence[str],
    image_shape: Sequence[int | None],
    names: list[str] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    warn: Callable[[str], None] | None = _warn,
) -> np.ndarray | list[np.ndarray]:
    """Read images for :func:`predict`: uint8 ``(N, H, W, C)`` (a list of ``(H, W, C)`` for
    a dataset of varying image sizes, whose transform resizes them).

    ``paths`` are image files (PNG, JPEG...: converted to the dataset's channels and resized
    to its ``H x W``), NumPy ``.npy``/``.npz`` files or IDX files (``*-ubyte``, ``*.idx``)
    holding one ``(H, W[, C])`` or many ``(N, H, W[, C])`` images: uint8, or numbers in
    0..255; a file whose values all lie in [0, 1] is read as 0..1 and scaled by 255. Arrays
    of another ``H x W`` are resized as image files are (bilinear, with a warning).

    Refused with :class:`InputError` (one line naming the file): a directory, an empty,
    corrupt or unreadable file, a wrong shape, non-finite values (with their count), values
    outside 0..255 (nothing is clipped). With the training data's ``mean`` / ``std`` (as in
    ``data_info.json``), a file whose pixels are far from them gets a warning (see
    :func:`check_value_range`). Warnings go to ``warn`` (default: one line on stderr).
    If ``names`` is a list, one name per image is appended (``file`` or ``file[i]``).

    Example (not run as a doctest: needs digits.npy):
      >>> load_inputs(["digits.npy"], (8, 8, 1)).shape  # doctest: +SKIP
      (5, 8, 8, 1)
    """
    if not paths:
        raise InputError("predict needs at least one image, IDX or NumPy file.")
    h, w, c = image_shape
    size = (int(h), int(w)) if h is not None and w is not None else None
    warn = warn or (lambda message: None)
    out = []
    for path in paths:
        path = os.fspath(path)
        images = _to_uint8(_images_array(_read_file(path, c, size), c, path), path)
        if size is not None and images.shape[1:3] != size:
            warn(
                f"{path}: resized {len(images)} image(s) from {images.shape[1]}x"
                f"{images.shape[2]} to {size[0]}x{size[1]} (bilinear, as image files are)."
            )
            images = _resize_images(images, *size)
        if mean is not None and std is not None:
            problem = check_value_range(images, mean, std)
            if problem:
                warn(f"{path}: {problem}")
        out.append(images)
        if names is not None:
            n = len(images)
            base = os.path.basename(path)
            names.extend([base] if n == 1 else [f"{base}[{i}]" for i in range(n)])
    if size is None and len({x.shape[1:] for x in out}) > 1:
        return [img for x in out for img in x]  # varying sizes: the transform resizes them
    return np.concatenate(out)


def predict(
    workdir: str,
    paths: Sequence[str],
    *,
    top_k: int = 3,
    names: list[str] | None = None,
    config: TrainSpec | Mapping | None = None,
) -> list[list[tuple[int, float]]]:
    """Top-``k`` ``(class, probability)`` of every image in ``paths`` (see :func:`load_inputs`).

    Images go through the run's eval transform (normalisation, resize, sequence layout).
    ``names`` (a list) receives one name per image (see :func:`load_inputs`, which also says
    which inputs are refused with one line and which get a warning). Class names, where the
    dataset has them, are in ``data_info.json``: see :func:`format_prediction`.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> predict("runs/default", ["digit.png"], top_k=2)  # doctest: +SKIP
      [[(3, 0.98), (5, 0.01)]]
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top_k must be an integer >= 1, got {top_k!r}.")
    model, spec = load_model(workdir, config=config)
    info = _info_from_dict(_read(os.path.abspath(workdir), DATA_INFO_FILE))
    images = load_inputs(paths, info.image_shape, names, mean=info.mean, std=info.std)
    transform = eval_transform(info, spec)
    logits = np.asarray(logits_fn(model, spec)(transform(images, None)), np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = min(top_k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[(int(i), float(p[i])) for i in row] for row, p in zip(order, probs)]


def class_names(workdir: str) -> list[str]:
    """The class names a run's ``data_info.json`` lists (``[]`` when the dataset has none).

    Example (a workdir with the ``data_info.json`` of a TFDS run, the key read here only):
      >>> import json, os, tempfile
      >>> run = tempfile.mkdtemp()
      >>> with open(os.path.join(run, "data_info.json"), "w") as f:
      ...     json.dump({"num_classes": 3, "class_names": ["airplane", "automobile", "bird"]}, f)
      >>> class_names(run)[:2]
      ['airplane', 'automobile']
    """
    return [str(n) for n in _read(os.path.abspath(workdir), DATA_INFO_FILE).get("class_names", [])]


def format_prediction(top: Sequence[tuple[int, float]], names: Sequence[str] = ()) -> str:
    """``"3 cat (0.981), 5 dog (0.012)"``: class index, its name if known, probability.

    Example:
      >>> format_prediction([(3, 0.98), (5, 0.01)], ["c0", "c1", "c2", "cat", "c4", "dog"])
      '3 cat (0.980), 5 dog (0.010)'
      >>> format_prediction([(3, 0.98)])
      '3 (0.980)'
    """
    return ", ".join(
        f"{c}{' ' + names[c] if 0 <= c < len(names) else ''} ({p:.3f})" for c, p in top
    )


#: ``inputs`` of :func:`export_model`: raw pixels (normalised inside) or normalised images.
EXPORT_INPUTS = ("raw", "normalized")


def _info_from_dict(info_dict: dict) -> Any:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in info_dict.items()}
    return DatasetInfo(**fields)


def eval_transform(info: Any, spec: TrainSpec) -> ImageTransform:
    """The run's evaluation transform (normalise, resize, sequence layout; no augmentation)
    of decoded images, as the data pipeline applies it to the eval split.

    Example:
      >>> from convjax.data import load_dataset
      >>> transform = eval_transform(load_dataset("digits").info, resolve_spec({}))
      >>> transform(np.zeros((2, 8, 8, 1), np.uint8), None).shape
      (2, 8, 8, 1)
    """
    return ImageTransform(
        info,
        train=False,
        image_size=spec.data.image_size,
        sequence=spec.data.sequence,
        permutation_seed=spec.data.permutation_seed,
    )


def preprocess_fn(info: Any, spec: TrainSpec) -> tuple[Any, tuple[int, ...]]:
    """The eval transform after decoding, in JAX: ``(fn, raw_shape)``.

    ``fn`` maps raw pixels ``(b, *raw_shape)`` (uint8, or floats in 0..255; ``raw_shape =
    (H, W, C)`` at the model's image size) to the model input ``(b, *info.input_shape)``:
    ``(x / 255 - mean) / std`` per channel, then the run's sequence layout (flatten / the
    fixed pMNIST permutation), exactly as :class:`convjax.data.ImageTransform` computes in
    NumPy (float32, the same operations). Resizing and cropping (``--config.data.image_size``
    of datasets with varying image sizes) are not included: give images of ``raw_shape``.

    Example:
      >>> from convjax.data import load_dataset
      >>> fn, shape = preprocess_fn(load_dataset("digits").info, resolve_spec({}))
      >>> shape, fn(jnp.full((1, 8, 8, 1), 255.0)).shape
      ((8, 8, 1), (1, 8, 8, 1))
    """
    transform = eval_transform(info, spec)
    mean = np.asarray(info.mean, np.float32)
    std = np.asarray(info.std, np.float32)
    scale = jnp.asarray(1.0 / (255.0 * std), jnp.float32)
    shift = jnp.asarray(mean / std, jnp.float32)
    permutation = transform.permutation
    sequence = transform.sequence

    def fn(images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) * scale - shift
        if sequence != "none":
            *lead, h, w, c = x.shape
            x = x.reshape(*lead, h * w, c)
            if permutation is not None:
                x = jnp.take(x, jnp.asarray(permutation), axis=-2)
        return x

    return fn, tuple(int(d) for d in transform.output_image_shape)


def export_model(
    workdir: str,
    out: str | None = None,
    *,
    platforms: Sequence[str] | None = None,
    config: TrainSpec | Mapping | None = None,
    inputs: str = "raw",
) -> str:
    """Serialize ``images -> logits`` (eval mode, parameters baked in) with ``jax.export``.

    With ``inputs="raw"`` (the default) the function takes the pixels the data pipeline
    reads, float32 ``(b, H, W, C)`` with values in 0..255 (pass uint8 images as
    ``images.astype(np.float32)``), and applies the run's normalisation (mean/std stored in
    ``data_info.json``) and sequence layout itself (see :func:`preprocess_fn`); its logits
    equal the model's on the pipeline's normalised images and rank classes as
    :func:`predict` does. With ``inputs="normalized"`` it takes float32
    ``(b, *input_shape)`` normalised as the data pipeline yields them. ``b`` is a symbolic
    batch size; the output is float32 logits ``(b, num_classes)``. ``signature.json`` next
    to the file records shapes, ``inputs``, mean/std. Reload with
    ``jax.export.deserialize(bytes).call(x)`` (needs only ``jax`` and ``flatbuffers``).
    A bfloat16 model called on CPU needs ``jax.jit(exported.call, compiler_options=
    convjax.train.distributed.CPU_BF16_WORKAROUND)`` (an XLA:CPU bug, see
    :func:`convjax.train.distributed.xla_compiler_options`; ``signature.json`` lists them).

    Args:
      workdir: a training run's directory.
      out: output file (default ``<workdir>/export/eval_fn.jax``).
      platforms: lowering platforms (default: the current backend), e.g. ``("cpu", "cuda")``.
      inputs: ``"raw"`` (pixels, normalised inside) or ``"normalized"``.

    Returns:
      The path written.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> path = export_model("runs/default")  # doctest: +SKIP
      >>> exported = jax.export.deserialize(open(path, "rb").read())  # doctest: +SKIP
      >>> logits = exported.call(images.astype(np.float32))  # uint8 (N, 8, 8, 1) digits
      ... # doctest: +SKIP
    """
    if inputs not in EXPORT_INPUTS:
        raise ValueError(f"--inputs must be one of {list(EXPORT_INPUTS)}, got {inputs!r}.")
    model, spec = load_model(workdir, config=config)
    info_dict = _read(os.path.abspath(workdir), DATA_INFO_FILE)
    dtype = compute_dtype(spec.run.dtype)
    graph, state = nnx.split(model)
    if inputs == "raw":
        preprocess, input_shape = preprocess_fn(_info_from_dict(info_dict), spec)
    else:
        preprocess, input_shape = (lambda x: x), tuple(info_dict["input_shape"])

    def eval_fn(images: jax.Array) -> jax.Array:
        x = preprocess(images)
        x = x if dtype is None else x.astype(dtype)
        return nnx.merge(graph, state)(x).astype(jnp.float32)

    (batch,) = jax.export.symbolic_shape("b")
    input_spec = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    kwargs = {} if platforms is None else {"platforms": tuple(platforms)}
    exported = jax.export.export(jax.jit(eval_fn), **kwargs)(input_spec)
    out = out or os.path.join(os.path.abspath(workdir), EXPORT_DIR, EXPORT_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(exported.serialize())
    meta = {
        "inputs": inputs,
        "input_shape": ["b", *input_shape],
        "input_dtype": "float32",
        "input_range": "0..255 (raw pixels)" if inputs == "raw" else "normalized",
        "output_shape": ["b", int(info_dict["num_classes"])],
        "mean": info_dict.get("mean"),
        "std": info_dict.get("std"),
        "sequence": spec.data.sequence,
        "model": spec.model.name,
        "dtype": spec.run.dtype,
        "platforms": list(exported.platforms),
        "cpu_compiler_options": xla_compiler_options(dtype, "cpu"),
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), EXPORT_META), "w") as f:
        json.dump(meta, f, indent=2)
    return out


__all__ = [
    "EVAL_SPLITS",
    "InputError",
    "check_value_range",
    "class_names",
    "evaluate_workdir",
    "format_prediction",
    "eval_transform",
    "export_model",
    "load_inputs",
    "load_model",
    "logits_fn",
    "predict",
    "preprocess_fn",
    "restore_run",
    "split_loader",
    "workdir_spec",
]
