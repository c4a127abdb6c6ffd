"""Use a trained run: load the model, evaluate a split, predict classes, export the function.

A workdir written by :func:`convjax.train.loop.train` describes itself: ``config.json`` (the
resolved config), ``data_info.json`` (classes, input shape, normalisation) and
``checkpoints/``. From those alone:

* :func:`load_model` -- ``(model, config)``: the NNX model with the checkpoint's parameters
  and statistics, in eval mode, ready for ``model(x)``;
* :func:`evaluate_workdir` -- loss / accuracy of the checkpoint on a split (``convjax eval``);
* :func:`predict` -- top-k classes of images, IDX or NumPy files (``convjax predict``);
* :func:`export_model` -- a serialized ``jax.export`` of the eval function (``convjax export``),
  reloadable with ``jax.export.deserialize`` without convjax.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax.train.checkpoint import Checkpointer
from convjax.train.config import resolve_config
from convjax.train.distributed import xla_compiler_options
from convjax.train.loop import (
    CONFIG_FILE,
    DATA_INFO_FILE,
    build_model,
    compute_dtype,
    make_data,
    make_optimizers,
)
from convjax.train.state import ModelDef, TrainState, create_train_state, split_model
from convjax.train.step import make_eval_step

#: Where :func:`export_model` writes by default (inside the workdir).
EXPORT_DIR = "export"
EXPORT_FILE = "eval_fn.jax"
EXPORT_META = "signature.json"
#: File suffixes read as arrays by :func:`load_inputs` (everything else: an image file).
NUMPY_SUFFIXES = (".npy", ".npz")
IDX_MARKERS = ("-ubyte", ".idx")


def _read(workdir: str, name: str) -> Any:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --workdir must be the directory of a convjax training run "
            "(it holds config.json, data_info.json and checkpoints/)."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def restore_run(
    workdir: str, step: int | None = None
) -> tuple[Any, dict, ModelDef, TrainState, int]:
    """``(config, data_info, model_def, state, step)`` of a workdir's checkpoint.

    The model is rebuilt from ``config.json`` without a collective axis (single device).

    Raises:
      FileNotFoundError: not a training workdir, or no checkpoint in it.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> config, info, model_def, state, step = restore_run("runs/default")  # doctest: +SKIP
    """
    workdir = os.path.abspath(workdir)
    config = resolve_config(_read(workdir, CONFIG_FILE))
    info = _read(workdir, DATA_INFO_FILE)
    model = build_model(
        config,
        num_classes=int(info["num_classes"]),
        in_features=int(info["input_shape"][-1]),
        axis_name=None,
    )
    model_def, params, pad_params, stats, param_state = split_model(model)
    tx_task, _, tx_pad = make_optimizers(config, param_state, max(int(config.num_steps), 1))
    template = create_train_state(params, pad_params, stats, tx_task, tx_pad, int(config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), enabled=False)
    try:
        restored = checkpointer.restore(template, step)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}.")
    state = jax.tree.map(jnp.asarray, restored[0])
    return config, info, model_def, state, int(state.step)


def load_model(workdir: str, step: int | None = None) -> tuple[nnx.Module, Any]:
    """The trained model of a workdir and its resolved config: ``(model, config)``.

    The model has the checkpoint's parameters, padding parameters and statistics, is in eval
    mode and maps normalised inputs ``(N, *data_info["input_shape"])`` (what the data
    pipeline yields) to logits ``(N, num_classes)``. With ``config.dtype="bfloat16"`` on CPU,
    compile calls with :func:`logits_fn` (it passes the XLA workaround options).

    Args:
      workdir: a training run's directory.
      step: the checkpoint step (default: the newest).

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> model, config = load_model("runs/default")  # doctest: +SKIP
      >>> logits = model(images)  # images: float32 (N, 8, 8, 1), normalised
      ... # doctest: +SKIP
    """
    config, _, model_def, state, _ = restore_run(workdir, step)
    model = model_def.merge(state.params, state.pad_params, state.stats, train=False)
    return model, config


def logits_fn(model: nnx.Module, config: Any) -> Any:
    """A jitted ``images -> logits`` of an eval-mode ``model`` (compute dtype of ``config``,
    float32 logits), compiled with the options :func:`xla_compiler_options` gives.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> model, config = load_model("runs/default")  # doctest: +SKIP
      >>> logits = logits_fn(model, config)(images)  # doctest: +SKIP
    """
    dtype = compute_dtype(config.dtype)
    graph, state = nnx.split(model)

    def apply(state: Any, images: jax.Array) -> jax.Array:
        x = images if dtype is None else images.astype(dtype)
        return nnx.merge(graph, state)(x).astype(jnp.float32)

    jitted = jax.jit(apply, compiler_options=xla_compiler_options(dtype) or None)
    return lambda images: jitted(state, jnp.asarray(images))


def split_loader(config: Any, split: str) -> Any:
    """The evaluation loader of ``split``: ``"test"`` (the run's eval split), ``"train"``
    (the train split, without augmentation), or a TFDS split name (``tfds:`` datasets)."""
    from convjax.data import ImageTransform, eval_loader, load_dataset

    if split in ("test", ""):
        return make_data(config).eval
    if split != "train":
        if not str(config.dataset).startswith("tfds:"):
            raise ValueError(
                f"--split must be 'test' or 'train' for dataset {config.dataset!r}, got {split!r}."
            )
        with config.unlocked():
            config.data.eval_split = split
        return make_data(config).eval
    loaded = load_dataset(
        config.data.name,
        data_dir=config.data.data_dir or None,
        train_split=config.data.train_split,
        num_classes=int(config.data.num_classes),
    )
    transform = ImageTransform(
        loaded.info,
        train=False,
        image_size=int(config.data.image_size),
        sequence=config.data.sequence,
        permutation_seed=int(config.data.permutation_seed),
    )
    batch = int(config.data.eval_batch_size) or int(config.batch_size)
    return eval_loader(loaded.train, transform, batch_size=batch)


def evaluate_workdir(
    workdir: str, split: str = "test", *, step: int | None = None, write: bool = True
) -> dict[str, Any]:
    """Evaluate a workdir's checkpoint on ``split``; optionally write ``eval_<split>.json``.

    Returns ``{"split", "step", "loss", "accuracy", "count"}`` (means over every example).

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> evaluate_workdir("runs/default")["accuracy"] > 0.9  # doctest: +SKIP
      True
    """
    config, _, model_def, state, ckpt_step = restore_run(workdir, step)
    dtype = compute_dtype(config.dtype)
    eval_step = jax.jit(
        make_eval_step(model_def, axis_name=None, compute_dtype=dtype),
        compiler_options=xla_compiler_options(dtype) or None,
    )
    totals: dict[str, float] = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in split_loader(config, split):
        sums = eval_step(state, {k: jnp.asarray(v) for k, v in batch.items()})
        for key in totals:
            totals[key] += float(sums[key])
    count = max(totals["count"], 1.0)
    result = {
        "split": split,
        "step": ckpt_step,
        "loss": totals["loss_sum"] / count,
        "accuracy": totals["correct"] / count,
        "count": int(totals["count"]),
    }
    if write:
        path = os.path.join(os.path.abspath(workdir), f"eval_{split}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def _as_images(array: np.ndarray, image_shape: Sequence[int | None], name: str) -> np.ndarray:
    """An array of one or several images -> uint8 ``(N, H, W, C)``."""
    channels = int(image_shape[-1])
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None, ..., None]
    elif a.ndim == 3:
        a = a[None] if a.shape[-1] == channels and channels > 1 else a[..., None]
    if a.ndim != 4 or a.shape[-1] != channels:
        raise ValueError(
            f"{name}: expected images (H, W), (N, H, W) or (N, H, W, {channels}), got shape "
            f"{np.shape(array)}."
        )
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and a.max() <= 1.0:
            a = a * 255.0  # floats in [0, 1]
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return a


def load_inputs(
    paths: Sequence[str], image_shape: Sequence[int | None], names: list[str] | None = None
) -> np.ndarray:
    """Read images for :func:`predict`: uint8 ``(N, H, W, C)``.

    ``paths`` are image files (PNG, JPEG...: converted to the dataset's channels and resized
    to its ``H x W``), NumPy ``.npy``/``.npz`` files or IDX files (``*-ubyte``, ``*.idx``)
    holding one ``(H, W[, C])`` or many ``(N, H, W[, C])`` images, uint8 or floats in [0, 1].
    If ``names`` is a list, one name per image is appended (``file`` or ``file[i]``).

    Example (not run as a doctest: needs digits.npy):
      >>> load_inputs(["digits.npy"], (8, 8, 1)).shape  # doctest: +SKIP
      (5, 8, 8, 1)
    """
    from convjax.data import read_idx

    if not paths:
        raise ValueError("predict needs at least one image, IDX or NumPy file.")
    h, w, c = image_shape
    out = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such input file: {path}")
        lower = path.lower()
        if lower.endswith(NUMPY_SUFFIXES):
            data = np.load(path)
            if isinstance(data, np.lib.npyio.NpzFile):
                data = data[data.files[0]]
            out.append(_as_images(data, image_shape, path))
        elif any(marker in lower for marker in IDX_MARKERS):
            out.append(_as_images(read_idx(path), image_shape, path))
        else:
            from PIL import Image

            with Image.open(path) as img:
                img = img.convert("L" if c == 1 else "RGB")
                if h is not None and w is not None and img.size != (w, h):
                    img = img.resize((w, h), Image.BILINEAR)
                out.append(_as_images(np.asarray(img), image_shape, path))
        if names is not None:
            n = len(out[-1])
            base = os.path.basename(path)
            names.extend([base] if n == 1 else [f"{base}[{i}]" for i in range(n)])
    return np.concatenate(out)


def predict(
    workdir: str, paths: Sequence[str], *, top_k: int = 3, names: list[str] | None = None
) -> list[list[tuple[int, float]]]:
    """Top-``k`` ``(class, probability)`` of every image in ``paths`` (see :func:`load_inputs`).

    Images go through the run's eval transform (normalisation, resize, sequence layout).
    ``names`` (a list) receives one name per image (see :func:`load_inputs`).

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> predict("runs/default", ["digit.png"], top_k=2)  # doctest: +SKIP
      [[(3, 0.98), (5, 0.01)]]
    """
    from convjax.data import ImageTransform

    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top_k must be an integer >= 1, got {top_k!r}.")
    model, config = load_model(workdir)
    info = _info_from_dict(_read(os.path.abspath(workdir), DATA_INFO_FILE))
    images = load_inputs(paths, info.image_shape, names)
    transform = ImageTransform(
        info,
        train=False,
        image_size=int(config.data.image_size),
        sequence=config.data.sequence,
        permutation_seed=int(config.data.permutation_seed),
    )
    logits = np.asarray(logits_fn(model, config)(transform(images, None)), np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = min(top_k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[(int(i), float(p[i])) for i in row] for row, p in zip(order, probs)]


#: ``inputs`` of :func:`export_model`: raw pixels (normalised inside) or normalised images.
EXPORT_INPUTS = ("raw", "normalized")


def _info_from_dict(info_dict: dict) -> Any:
    from convjax.data import DatasetInfo

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in info_dict.items()}
    return DatasetInfo(**fields)


def preprocess_fn(info: Any, config: Any) -> tuple[Any, tuple[int, ...]]:
    """The eval transform after decoding, in JAX: ``(fn, raw_shape)``.

    ``fn`` maps raw pixels ``(b, *raw_shape)`` (uint8, or floats in 0..255; ``raw_shape =
    (H, W, C)`` at the model's image size) to the model input ``(b, *info.input_shape)``:
    ``(x / 255 - mean) / std`` per channel, then the run's sequence layout (flatten / the
    fixed pMNIST permutation), exactly as :class:`convjax.data.ImageTransform` computes in
    NumPy (float32, the same operations). Resizing and cropping (``--config.data.image_size``
    of datasets with varying image sizes) are not included: give images of ``raw_shape``.

    Example:
      >>> from convjax.data import load_dataset
      >>> fn, shape = preprocess_fn(load_dataset("digits").info, resolve_config({}))
      >>> shape, fn(jnp.full((1, 8, 8, 1), 255.0)).shape
      ((8, 8, 1), (1, 8, 8, 1))
    """
    from convjax.data import ImageTransform

    transform = ImageTransform(
        info,
        train=False,
        image_size=int(config.data.image_size),
        sequence=config.data.sequence,
        permutation_seed=int(config.data.permutation_seed),
    )
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
    model, config = load_model(workdir)
    info_dict = _read(os.path.abspath(workdir), DATA_INFO_FILE)
    dtype = compute_dtype(config.dtype)
    graph, state = nnx.split(model)
    if inputs == "raw":
        preprocess, input_shape = preprocess_fn(_info_from_dict(info_dict), config)
    else:
        preprocess, input_shape = (lambda x: x), tuple(info_dict["input_shape"])

    def eval_fn(images: jax.Array) -> jax.Array:
        x = preprocess(images)
        x = x if dtype is None else x.astype(dtype)
        return nnx.merge(graph, state)(x).astype(jnp.float32)

    (batch,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    kwargs = {} if platforms is None else {"platforms": tuple(platforms)}
    exported = jax.export.export(jax.jit(eval_fn), **kwargs)(spec)
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
        "sequence": config.data.sequence,
        "model": config.model,
        "dtype": config.dtype,
        "platforms": list(exported.platforms),
        "cpu_compiler_options": xla_compiler_options(dtype, "cpu"),
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), EXPORT_META), "w") as f:
        json.dump(meta, f, indent=2)
    return out


__all__ = [
    "evaluate_workdir",
    "export_model",
    "load_inputs",
    "load_model",
    "logits_fn",
    "predict",
    "preprocess_fn",
    "restore_run",
    "split_loader",
]
