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
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax._spec import ConfigError
from convjax.data import DatasetInfo, ImageTransform, eval_loader, load_dataset, read_idx
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

    Example:
      >>> workdir_spec("runs/default").model.name
      'digits_cnn'
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

    Example:
      >>> config, info, model_def, state, step = restore_run("runs/default")
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

    Example:
      >>> model, spec = load_model("runs/default")
      >>> logits = model(images)  # images: float32 (N, 8, 8, 1), normalised
    """
    spec, _, model_def, state, _ = restore_run(workdir, step, config=config)
    model = model_def.merge(state.params, state.pad_params, state.stats, train=False)
    return model, spec


def logits_fn(model: nnx.Module, spec: TrainSpec) -> Any:
    """A jitted ``images -> logits`` of an eval-mode ``model`` (compute dtype of ``spec``,
    float32 logits), compiled with the options :func:`xla_compiler_options` gives.

    Example:
      >>> model, spec = load_model("runs/default")
      >>> logits = logits_fn(model, spec)(images)
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
    (the train split, without augmentation), or a TFDS split name (``tfds:`` datasets)."""
    data = spec.data
    if split in ("test", ""):
        return make_data(spec).eval
    if split != "train":
        if not data.name.startswith("tfds:"):
            raise ValueError(
                f"--split must be 'test' or 'train' for dataset {data.name!r}, got {split!r}."
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

    Example:
      >>> evaluate_workdir("runs/default")["accuracy"] > 0.9
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

    Example:
      >>> load_inputs(["digits.npy"], (8, 8, 1)).shape
      (5, 8, 8, 1)
    """
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
    workdir: str,
    paths: Sequence[str],
    *,
    top_k: int = 3,
    names: list[str] | None = None,
    config: TrainSpec | Mapping | None = None,
) -> list[list[tuple[int, float]]]:
    """Top-``k`` ``(class, probability)`` of every image in ``paths`` (see :func:`load_inputs`).

    Images go through the run's eval transform (normalisation, resize, sequence layout).
    ``names`` (a list) receives one name per image (see :func:`load_inputs`).

    Example:
      >>> predict("runs/default", ["digit.png"], top_k=2)
      [[(3, 0.98), (5, 0.01)]]
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top_k must be an integer >= 1, got {top_k!r}.")
    model, spec = load_model(workdir, config=config)
    info_dict = _read(os.path.abspath(workdir), DATA_INFO_FILE)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in info_dict.items()}
    info = DatasetInfo(**fields)
    images = load_inputs(paths, info.image_shape, names)
    transform = ImageTransform(
        info,
        train=False,
        image_size=spec.data.image_size,
        sequence=spec.data.sequence,
        permutation_seed=spec.data.permutation_seed,
    )
    logits = np.asarray(logits_fn(model, spec)(transform(images, None)), np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = min(top_k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[(int(i), float(p[i])) for i in row] for row, p in zip(order, probs)]


def export_model(
    workdir: str,
    out: str | None = None,
    *,
    platforms: Sequence[str] | None = None,
    config: TrainSpec | Mapping | None = None,
) -> str:
    """Serialize ``images -> logits`` (eval mode, parameters baked in) with ``jax.export``.

    The input is float32 ``(b, *input_shape)`` with a symbolic batch size ``b`` (normalised
    as the data pipeline does; ``signature.json`` next to it has mean/std); the output is
    float32 logits ``(b, num_classes)``. Reload with ``jax.export.deserialize(bytes).call(x)``.
    A bfloat16 model called on CPU needs ``jax.jit(exported.call, compiler_options=
    convjax.train.distributed.CPU_BF16_WORKAROUND)`` (an XLA:CPU bug, see
    :func:`convjax.train.distributed.xla_compiler_options`; ``signature.json`` lists them).

    Args:
      workdir: a training run's directory.
      out: output file (default ``<workdir>/export/eval_fn.jax``).
      platforms: lowering platforms (default: the current backend), e.g. ``("cpu", "cuda")``.

    Returns:
      The path written.

    Example:
      >>> path = export_model("runs/default")
      >>> exported = jax.export.deserialize(open(path, "rb").read())
      >>> logits = exported.call(images)
    """
    model, spec = load_model(workdir, config=config)
    info = _read(os.path.abspath(workdir), DATA_INFO_FILE)
    dtype = compute_dtype(spec.run.dtype)
    graph, state = nnx.split(model)

    def eval_fn(images: jax.Array) -> jax.Array:
        x = images if dtype is None else images.astype(dtype)
        return nnx.merge(graph, state)(x).astype(jnp.float32)

    (batch,) = jax.export.symbolic_shape("b")
    input_spec = jax.ShapeDtypeStruct((batch, *info["input_shape"]), jnp.float32)
    kwargs = {} if platforms is None else {"platforms": tuple(platforms)}
    exported = jax.export.export(jax.jit(eval_fn), **kwargs)(input_spec)
    out = out or os.path.join(os.path.abspath(workdir), EXPORT_DIR, EXPORT_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(exported.serialize())
    meta = {
        "input_shape": ["b", *info["input_shape"]],
        "input_dtype": "float32",
        "output_shape": ["b", int(info["num_classes"])],
        "mean": info.get("mean"),
        "std": info.get("std"),
        "model": spec.model.name,
        "dtype": spec.run.dtype,
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
    "restore_run",
    "split_loader",
    "workdir_spec",
]
