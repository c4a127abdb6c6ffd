"""Model-level train-step benchmark: every switch value against the model's baseline.

Run ``python -m convjax.bench.train_step`` (ResNet-20 and VGG-16 at CIFAR size, 32x32x3,
10 classes, batch 256) or ``--quick`` (sized for a 2-core CPU: batch 16, VGG width 0.25,
5 timed steps). For each model the baseline is ``padding=zero, pool=max, norm=batch,
conv=standard``; each variant changes one switch (or, with ``--grid``, any combination of
the ``--switches`` values). A combination the model rejects is skipped with its reason; a
variant whose compiled program is identical to the baseline's (e.g. ``pool`` in ResNet-20,
which has no pooling layer) is reported as such and not timed.

What is timed is the trainer's own step: :func:`convjax.train.factory.make_train_setup`
builds the model, the train state with both optimizer states (task and Padding Module) and
the per-device step (task loss + padding losses, one backward pass), and
:class:`convjax.train.distributed.DataParallel` compiles it on one device as the trainer
does (``--parallel shard_map``, the default, is ``jax.jit`` of ``shard_map``, whose AOT API
gives trace, lower and compile times separately; ``--parallel pmap`` gives trace + lower
together). Printed per variant:

- step time ratio to the baseline (ratio of medians; every round of timed steps runs each
  variant once, interleaved, so all see the same load), median step time and images/s, and
  the same for the CPU time of the process (on a CPU backend: the compute, far less
  sensitive to other jobs' load than wall time);
- trace, lower and compile seconds (compile also in CPU time), and the compile-time ratios
  to the baseline;
- convolutions in the program: their number before XLA's optimisations (backend
  independent: what a GPU compiler receives) and after (on this backend), XLA's flop
  estimate, and the convolution shapes (all for the baseline, the differences for the
  others): unusual shapes are what make GPU autotuning slow and untuned kernels slow;
- the task loss after the timed steps (a finite number shows the variant trains);
- device, versions and machine load (``os.getloadavg``) before and after.

**A converted model against the zoo** (``--side-by-side``): ``--models`` may name an
import-path model (``<module>:<factory>``, the trainer's ``--config.model`` contract,
:mod:`convjax.models.spec`), which the trainer builds with the factory and
:func:`convjax.convert`. With ``--side-by-side`` every switch setting is timed for all the
models together, interleaved, and the ratios are to the first model, e.g. the zoo's
``digits_cnn`` against its plain Flax twin converted with the same switches::

    python -m convjax.bench.train_step --quick --side-by-side --size 8 --in-channels 1 \
      --models digits_cnn,convjax.bench.plain_models:digits_cnn \
      --switches padding=learned pool=soft norm=deconv --grid

``--out`` writes the results as JSON (``.json``) or a markdown table (``.md``). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from convjax.bench.timing import environment_header, time_interleaved
from convjax.configs.default import base_config
from convjax.models import available_models
from convjax.models.spec import is_import_path, resolve_factory
from convjax.train.distributed import DataParallel
from convjax.train.factory import make_train_setup

#: Switch name -> the values swept by default (the first one is the baseline).
SWITCHES: dict[str, tuple[str, ...]] = {
    "padding": ("zero", "reflect", "replicate", "circular", "partial", "learned"),
    "pool": ("max", "avg", "soft"),
    "norm": ("batch", "deconv", "none"),
    "conv": ("standard", "flex"),
}
#: The baseline every ratio is taken against.
BASELINE: dict[str, str] = {name: values[0] for name, values in SWITCHES.items()}
#: Models given ``width_multiplier`` by ``--width-multiplier`` / ``--quick``.
_WIDTH_MULTIPLIER_MODELS = ("vgg11", "vgg16", "vgg11_imagenet", "vgg16_imagenet", "resnet18")
_WIDTH_MULTIPLIER_MODELS += ("resnet50",)

Switches = dict[str, str]


# --------------------------------------------------------------------------- arguments
def parse_switches(tokens: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``["padding=zero,learned", "norm=batch,deconv"]`` -> ``{"padding": (...), ...}``.

    Only the named switches are swept; values are checked against :data:`SWITCHES`.

    Example:
      >>> parse_switches(["padding=zero,learned"])
      {'padding': ('zero', 'learned')}
    """
    out: dict[str, tuple[str, ...]] = {}
    for token in tokens:
        name, sep, values = token.partition("=")
        if not sep or name not in SWITCHES or not values:
            raise ValueError(
                f"`--switches` entries must look like NAME=V1,V2 with NAME one of "
                f"{list(SWITCHES)}, got {token!r}."
            )
        chosen = tuple(v.strip() for v in values.split(",") if v.strip())
        bad = [v for v in chosen if v not in SWITCHES[name]]
        if bad:
            raise ValueError(
                f"`--switches {name}=...` values must be in {list(SWITCHES[name])}, got {bad}."
            )
        out[name] = chosen
    return out


def variant_list(sweep: dict[str, tuple[str, ...]], *, grid: bool = False) -> list[Switches]:
    """The switch settings to run; the first is always :data:`BASELINE`.

    Default: one switch at a time changed from the baseline. ``grid``: every combination of
    the swept values (unswept switches at their baseline value).

    Example:
      >>> [v["padding"] for v in variant_list({"padding": ("zero", "learned")})]
      ['zero', 'learned']
    """
    variants = [dict(BASELINE)]
    if grid:
        names = list(sweep)
        for values in itertools.product(*(sweep[n] for n in names)):
            variants.append({**BASELINE, **dict(zip(names, values, strict=True))})
    else:
        for name, values in sweep.items():
            variants.extend({**BASELINE, name: value} for value in values)
    unique: list[Switches] = []
    for v in variants:
        if v not in unique:
            unique.append(v)
    return unique


def variant_name(switches: Switches) -> str:
    """``"baseline"`` or the switches that differ from it, e.g. ``"padding=learned"``."""
    diff = [f"{k}={v}" for k, v in switches.items() if BASELINE[k] != v]
    return "+".join(diff) or "baseline"


# --------------------------------------------------------------------------- HLO facts
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\([^=]*?\)|\S+)\s+"
    r"(?P<op>[a-z][\w\-]*)\((?P<args>[^)]*)\)(?P<attrs>.*)$"
)
_LAYOUT = re.compile(r"\{[^}]*\}")


def _strip_layout(shape: str) -> str:
    shape = _LAYOUT.sub("", shape)
    if shape.startswith("("):  # (result, scratch) of a library call: keep the result
        shape = shape[1:].split(", ")[0].rstrip(")")
    return shape


def _attr(attrs: str, key: str) -> str:
    match = re.search(rf"{key}=(\{{[^}}]*\}}|\"[^\"]*\"|[^,\s]+)", attrs)
    return match.group(1).strip('"') if match else ""


def hlo_convolutions(hlo_text: str) -> list[dict[str, str]]:
    """Convolutions in an HLO module's text, with their operand and result shapes.

    Counts ``convolution`` instructions (also inside fusions) and library calls whose
    target names a convolution (cuDNN ``__cudnn$conv...``, oneDNN ``__onednn$convolution``).

    Returns:
      One dict per convolution: ``op`` (``convolution`` or the custom-call target),
      ``lhs``, ``rhs``, ``out`` (shapes without layouts, e.g. ``f32[256,32,32,16]``),
      ``window``, ``dim_labels``, ``groups`` (feature group count, ``""`` if 1).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = jax.jit(lambda x, k: jax.lax.conv(x, k, (1, 1), "SAME"))
      >>> text = f.lower(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3))).as_text("hlo")
      >>> [c["out"] for c in hlo_convolutions(text)]
      ['f32[2,4,8,8]']
    """
    shapes: dict[str, str] = {}
    found: list[tuple[str, str, str, str]] = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        name, shape, op = match["name"], match["shape"], match["op"]
        shapes[name] = shape
        attrs = match["attrs"]
        target = _attr(attrs, "custom_call_target") if op == "custom-call" else ""
        if op == "convolution" or (target and "conv" in target.lower()):
            found.append((target or op, shape, match["args"], attrs))
    convs = []
    for op, shape, args, attrs in found:
        operands = [a.strip().split()[-1].lstrip("%") for a in args.split(",") if a.strip()]
        lhs, rhs = (operands + ["", ""])[:2]
        groups = _attr(attrs, "feature_group_count")
        convs.append(
            {
                "op": op,
                "lhs": _strip_layout(shapes.get(lhs, "?")),
                "rhs": _strip_layout(shapes.get(rhs, "?")),
                "out": _strip_layout(shape),
                "window": _attr(attrs, "window").strip("{}"),
                "dim_labels": _attr(attrs, "dim_labels"),
                "groups": "" if groups in ("", "1") else groups,
            }
        )
    return convs


def conv_signature(conv: dict[str, str]) -> str:
    """One line describing a convolution: ``lhs * rhs -> out [window] dim_labels``."""
    text = f"{conv['lhs']} * {conv['rhs']} -> {conv['out']}"
    if conv["window"]:
        text += f" [{conv['window']}]"
    if conv["dim_labels"]:
        text += f" {conv['dim_labels']}"
    if conv["groups"]:
        text += f" groups={conv['groups']}"
    if conv["op"] != "convolution":
        text += f" ({conv['op']})"
    return text


def _program_fingerprint(hlo_text: str) -> str:
    """The HLO text without metadata, to tell whether two programs are the same."""
    text = re.sub(r",?\s*metadata=\{[^}]*\}", "", hlo_text)
    return re.sub(r"^HloModule \S+", "HloModule", text, flags=re.M)


# --------------------------------------------------------------------------- one variant
def _config(model: str, switches: Switches, *, batch: int, dtype: str, model_kwargs: dict) -> Any:
    """The trainer's default config with this model, switches, batch and dtype."""
    config = base_config()
    config.model = model
    config.padding = switches["padding"]
    config.pool = switches["pool"]
    config.norm = switches["norm"]
    config.conv = switches["conv"]
    config.batch_size = batch
    config.dtype = dtype
    for key, value in model_kwargs.items():
        config.model_kwargs[key] = value
    return config


def _place(dp: Any, tree: Any) -> Any:
    """Place a per-device batch once, where the compiled step wants it (no copy per step)."""
    if dp.backend == "pmap":
        mesh = jax.sharding.Mesh(np.asarray(dp.devices), (dp.axis_name,))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(dp.axis_name))
        return jax.device_put(dp.shard_batch(tree), sharding)
    return dp.shard_batch(tree)


def prepare_variant(
    model: str,
    switches: Switches,
    *,
    batch: dict[str, np.ndarray],
    num_classes: int,
    dtype: str,
    model_kwargs: dict,
    parallel: str,
) -> dict[str, Any]:
    """Build, trace, lower and compile one variant's train step; HLO facts, no timing.

    Args:
      model: a ``convjax.models.available_models()`` name or an import path
        ``<module>:<factory>`` (built by the factory and :func:`convjax.convert`).
      switches: ``{"padding", "pool", "norm", "conv"}`` values.
      batch: host arrays ``image`` float32 ``(B, H, W, C)`` and ``label`` int32 ``(B,)``.
      num_classes, dtype, model_kwargs: passed to the model through the config.
      parallel: ``"shard_map"`` or ``"pmap"`` (``DataParallel`` backend, one device).

    Returns:
      A result dict with ``name``, ``switches`` and ``status``: ``"skipped"`` (the model
      rejects the combination) or ``"failed"`` (tracing or compiling raised) with
      ``reason``; or ``"ok"`` with ``trace_s`` (``None`` under pmap), ``lower_s``,
      ``compile_s``, ``compile_cpu_s``, ``flops``, ``convs_before_xla`` /
      ``convs_after_xla`` (:func:`conv_signature` strings), parameter counts and the private
      ``_call`` (runs one train step, advancing its own state) used for timing.

    Example:
      >>> batch = {"image": np.zeros((4, 8, 8, 1), np.float32), "label": np.zeros(4, np.int32)}
      >>> res = prepare_variant("digits_cnn", BASELINE, batch=batch, num_classes=10,
      ...                       dtype="float32", model_kwargs={}, parallel="shard_map")
      >>> res["status"], len(res["convs_before_xla"])
      ('ok', 11)
    """
    result: dict[str, Any] = {"name": variant_name(switches), "switches": dict(switches)}
    config = _config(
        model, switches, batch=len(batch["label"]), dtype=dtype, model_kwargs=model_kwargs
    )
    in_features = int(batch["image"].shape[-1])
    try:
        setup = make_train_setup(
            config,
            num_classes=num_classes,
            in_features=in_features,
            num_steps=1000,
            input_shape=tuple(batch["image"].shape[1:]),
        )
    except ValueError as err:
        return {**result, "status": "skipped", "reason": str(err)}
    dp = DataParallel(parallel, devices=jax.devices()[:1])
    step = dp.compile(setup.train_step, donate_state=True)
    state = dp.replicate(setup.state)
    placed = _place(dp, batch)

    try:
        t0 = time.perf_counter()
        if hasattr(step, "trace"):
            traced = step.trace(state, placed)
            t1 = time.perf_counter()
            lowered = traced.lower()
        else:  # jax.pmap: tracing is part of lower()
            t1 = t0
            lowered = step.lower(state, placed)
        t2, c2 = time.perf_counter(), time.process_time()
        compiled = lowered.compile()
        t3 = time.perf_counter()
        compile_cpu_s = time.process_time() - c2
    except Exception as err:  # a benchmark reports, it does not stop: e.g. a wrong input rank
        return {**result, "status": "failed", "reason": f"{type(err).__name__}: {err}"}

    hlo_before = lowered.as_text(dialect="hlo")
    hlo_after = compiled.as_text() or ""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    flops = float(cost.get("flops", -1.0)) if isinstance(cost, dict) else -1.0
    convs_before = hlo_convolutions(hlo_before)
    convs_after = hlo_convolutions(hlo_after)

    holder = {"state": state, "metrics": None}

    def call() -> Any:
        holder["state"], holder["metrics"] = compiled(holder["state"], placed)
        return holder["state"], holder["metrics"]

    result.update(
        status="ok",
        num_params=setup.num_params,
        num_padding_params=setup.num_padding_params,
        trace_s=(t1 - t0) if hasattr(step, "trace") else None,
        lower_s=t2 - t1,
        compile_s=t3 - t2,
        compile_cpu_s=compile_cpu_s,
        flops=flops,
        convs_before_xla=[conv_signature(c) for c in convs_before],
        convs_after_xla=[conv_signature(c) for c in convs_after],
        _fingerprint=_program_fingerprint(hlo_before),
        _call=call,
        _holder=holder,
    )
    return result


# --------------------------------------------------------------------------- one model
def bench_model(
    model: str,
    variants: list[Switches],
    *,
    batch_size: int,
    size: int,
    in_channels: int,
    num_classes: int,
    steps: int,
    warmup: int,
    dtype: str,
    model_kwargs: dict,
    parallel: str,
    warm_compile: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Prepare every variant of ``model``, then time all of them interleaved.

    The batch is random: images ``(batch_size, size, size, in_channels)`` float32, labels in
    ``[0, num_classes)``. ``variants[0]`` is the baseline of every ratio (``ratio`` for the
    step time, ``compile_ratio`` / ``compile_cpu_ratio`` for compilation); a variant whose
    program (HLO before optimisation, without metadata) equals the baseline's gets status
    ``"same_as_baseline"`` and is not timed. With ``warm_compile`` the baseline is first
    compiled once more and discarded, so one-time costs do not inflate its compile time.
    ``log`` receives progress lines.

    Returns:
      ``{"model", "batch", "input", "num_classes", "model_kwargs", "variants": [...]}`` with
      the :func:`prepare_variant` dicts completed by ``step_s`` (median), ``step_s_all``,
      ``images_per_s``, the ratios and ``loss`` (task loss of the last timed step).

    Example (compiles and times a model: tens of seconds, so not run as a doctest):
      >>> res = bench_model("digits_cnn", [BASELINE], batch_size=4, size=8, in_channels=1,
      ...                   num_classes=10, steps=1, warmup=1, dtype="float32",
      ...                   model_kwargs={}, parallel="shard_map", warm_compile=False)
      ... # doctest: +SKIP
      >>> res["variants"][0]["ratio"]  # doctest: +SKIP
      1.0
    """
    rs = np.random.RandomState(0)
    batch = {
        "image": rs.randn(batch_size, size, size, in_channels).astype(np.float32),
        "label": rs.randint(0, num_classes, batch_size).astype(np.int32),
    }
    results: list[dict[str, Any]] = []
    baseline_fp = None
    if warm_compile:
        # One-time costs (backend start-up, caches of shared lowering rules) would otherwise
        # all land on the first compile, the baseline's, and understate every ratio.
        log(f"  compiling {model} {variant_name(variants[0])} (warm-up, discarded) ...")
        prepare_variant(
            model,
            variants[0],
            batch=batch,
            num_classes=num_classes,
            dtype=dtype,
            model_kwargs=model_kwargs,
            parallel=parallel,
        )
    for index, switches in enumerate(variants):
        log(f"  compiling {model} {variant_name(switches)} ...", flush=True)
        res = prepare_variant(
            model,
            switches,
            batch=batch,
            num_classes=num_classes,
            dtype=dtype,
            model_kwargs=model_kwargs,
            parallel=parallel,
        )
        if res["status"] == "ok":
            fp = res.pop("_fingerprint")
            if index == 0:
                baseline_fp = fp
            elif fp == baseline_fp:
                res.update(status="same_as_baseline", _call=None, _holder=None)
                res["reason"] = "compiled program identical to the baseline's (switch unused)"
        results.append(res)

    calls = {r["name"]: r["_call"] for r in results if r["status"] == "ok"}
    cpu_times: dict[str, list[float]] = {}
    times = (
        time_interleaved(calls, warmup=warmup, repeats=steps, cpu_times=cpu_times) if calls else {}
    )
    base = results[0] if results and results[0]["status"] == "ok" else None
    base_t = statistics.median(times[base["name"]]) if base else None
    base_cpu = statistics.median(cpu_times[base["name"]]) if base else None
    for r in results:
        holder = r.pop("_holder", None)
        r.pop("_call", None)
        if r["name"] not in times:
            continue
        t = statistics.median(times[r["name"]])
        r["step_s"] = t
        r["step_s_all"] = times[r["name"]]
        r["images_per_s"] = batch_size / t
        r["ratio"] = t / base_t if base_t else None
        r["step_cpu_s"] = statistics.median(cpu_times[r["name"]])
        r["step_cpu_ratio"] = r["step_cpu_s"] / base_cpu if base_cpu else None
        if base is not None:
            r["compile_ratio"] = r["compile_s"] / base["compile_s"]
            r["compile_cpu_ratio"] = r["compile_cpu_s"] / base["compile_cpu_s"]
            r["trace_ratio"] = r["trace_s"] / base["trace_s"] if r["trace_s"] is not None else None
        metrics = holder["metrics"]
        r["loss"] = float(np.asarray(metrics["loss"]).reshape(-1)[0])
    return {
        "model": model,
        "batch": batch_size,
        "input": [size, size, in_channels],
        "num_classes": num_classes,
        "model_kwargs": model_kwargs,
        "variants": results,
    }


# --------------------------------------------------------------------------- reporting
def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    if value is None:
        width = re.match(r"\d*", spec).group()
        return missing.rjust(int(width or 0))
    return format(value, spec)


def format_model_table(res: dict[str, Any], *, max_diff_lines: int = 16) -> str:
    """The printed report of one model: ratios, times, compile, HLO convolution facts.

    The baseline's convolutions are listed in full, each other variant's as the multiset
    difference to the baseline (at most ``max_diff_lines`` lines).
    """
    lines = []
    ok = [r for r in res["variants"] if r["status"] == "ok"]
    head = ok[0] if ok else None
    kwargs = ", ".join(f"{k}={v}" for k, v in res["model_kwargs"].items())
    params = f"{head['num_params']:,} params" if head else "no variant built"
    lines.append(
        f"== {res['model']} ({params}{', ' + kwargs if kwargs else ''}), batch {res['batch']}, "
        f"input {'x'.join(map(str, res['input']))}, {res['num_classes']} classes"
    )
    lines.append(f"{'':28s} {'ratio to baseline':^27s} | {'step (ms)':^15s} |{'seconds':^37s}|")
    lines.append(
        f"{'variant':28s} {'step':>6s} {'cpu':>6s} {'compile':>7s} {'cpu':>5s} | "
        f"{'wall':>7s} {'cpu':>7s} | {'img/s':>7s} {'trace':>6s} {'lower':>6s} "
        f"{'compile':>7s} {'cpu':>6s} | {'convs':>5s} {'xla':>4s} {'GFLOP':>7s} {'loss':>7s}"
    )
    for r in res["variants"]:
        if r["status"] != "ok":
            lines.append(f"{r['name']:28s} {r['status']}: {r['reason']}")
            continue
        gflop = r["flops"] / 1e9 if r["flops"] >= 0 else None
        lines.append(
            f"{r['name']:28s} {_fmt(r.get('ratio'), '6.2f')} "
            f"{_fmt(r.get('step_cpu_ratio'), '6.2f')} {_fmt(r.get('compile_ratio'), '7.2f')} "
            f"{_fmt(r.get('compile_cpu_ratio'), '5.2f')} | {r['step_s'] * 1e3:7.1f} "
            f"{r['step_cpu_s'] * 1e3:7.1f} | {r['images_per_s']:7.1f} "
            f"{_fmt(r['trace_s'], '6.2f')} {r['lower_s']:6.2f} {r['compile_s']:7.2f} "
            f"{r['compile_cpu_s']:6.2f} | {len(r['convs_before_xla']):5d} "
            f"{len(r['convs_after_xla']):4d} {_fmt(gflop, '7.2f')} {r['loss']:7.3f}"
        )
    lines.append(
        "  (step: median wall time; compile: wall time; cpu: CPU time of this process during"
        " the same calls, on a CPU backend far less sensitive to other jobs' load than wall"
        " time; convs: convolutions in the program before XLA's optimisations, what a GPU"
        " compiler receives; xla: after optimisation on this backend; GFLOP: XLA's estimate"
        " per step; loss: task loss of the last step)"
    )
    if head:
        hist = collections.Counter(head["convs_before_xla"])
        lines.append(f"  baseline convolutions before XLA ({sum(hist.values())}):")
        lines.extend(f"    {n:3d} x {sig}" for sig, n in sorted(hist.items()))
        for r in ok[1:]:
            diff = collections.Counter(r["convs_before_xla"])
            added, removed = diff - hist, hist - diff
            if not added and not removed:
                lines.append(f"  {r['name']}: same convolutions as the baseline")
                continue
            lines.append(
                f"  {r['name']}: +{sum(added.values())} / -{sum(removed.values())} convolutions"
            )
            rows = [f"    + {n:3d} x {sig}" for sig, n in sorted(added.items())]
            rows += [f"    - {n:3d} x {sig}" for sig, n in sorted(removed.items())]
            lines.extend(rows[:max_diff_lines])
            if len(rows) > max_diff_lines:
                lines.append(
                    f"    ... {len(rows) - max_diff_lines} more lines (all in --out .json)"
                )
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    """Markdown tables of a report (one per model), with the environment line."""
    out = [f"`{report['command']}`", "", "```", report["environment"], "```", ""]
    for res in report["models"]:
        out.append(
            f"**{res['model']}**, batch {res['batch']}, input {'x'.join(map(str, res['input']))}"
        )
        out.append("")
        out.append(
            "| variant | step ratio (wall / cpu) | compile ratio (wall / cpu) | step ms | img/s "
            "| trace s | lower s | compile s | convs | convs after XLA |"
        )
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in res["variants"]:
            if r["status"] != "ok":
                out.append(f"| {r['name']} | {r['status']}: {r['reason']} | | | | | | | | |")
                continue
            out.append(
                f"| {r['name']} | {_fmt(r.get('ratio'), '.2f')}x / "
                f"{_fmt(r.get('step_cpu_ratio'), '.2f')}x | "
                f"{_fmt(r.get('compile_ratio'), '.2f')}x / "
                f"{_fmt(r.get('compile_cpu_ratio'), '.2f')}x | {r['step_s'] * 1e3:.2f} | "
                f"{r['images_per_s']:.1f} | {_fmt(r['trace_s'], '.2f')} | {r['lower_s']:.2f} | "
                f"{r['compile_s']:.2f} | {len(r['convs_before_xla'])} | "
                f"{len(r['convs_after_xla'])} |"
            )
        out.append("")
    if report.get("side_by_side"):
        out += ["```", format_side_by_side(report["side_by_side"]), "```", ""]
    return "\n".join(out)


def bench_side_by_side(
    models: Sequence[str],
    variants: list[Switches],
    *,
    batch_size: int,
    size: int,
    in_channels: int,
    num_classes: int,
    steps: int,
    warmup: int,
    dtype: str,
    model_kwargs: dict[str, dict],
    parallel: str,
    log: Any = print,
) -> list[dict[str, Any]]:
    """For each switch setting, the train step of every model, timed together (interleaved);
    ratios to ``models[0]`` (e.g. a zoo model against a converted plain twin).

    Returns:
      One dict per variant: ``{"name", "switches", "models": [prepare_variant dicts with
      step_s, step_cpu_s, ratio, step_cpu_ratio, loss]}``.

    Example:
      >>> rows = bench_side_by_side(["digits_cnn", "convjax.bench.plain_models:digits_cnn"],
      ...     [BASELINE], batch_size=4, size=8, in_channels=1, num_classes=10, steps=1,
      ...     warmup=1, dtype="float32", model_kwargs={}, parallel="shard_map")
        compiling digits_cnn baseline ...
        compiling convjax.bench.plain_models:digits_cnn baseline ...
      >>> rows[0]["models"][0]["ratio"]
      1.0
    """
    rs = np.random.RandomState(0)
    batch = {
        "image": rs.randn(batch_size, size, size, in_channels).astype(np.float32),
        "label": rs.randint(0, num_classes, batch_size).astype(np.int32),
    }
    rows = []
    for switches in variants:
        results = []
        for model in models:
            log(f"  compiling {model} {variant_name(switches)} ...", flush=True)
            res = prepare_variant(
                model,
                switches,
                batch=batch,
                num_classes=num_classes,
                dtype=dtype,
                model_kwargs=model_kwargs.get(model, {}),
                parallel=parallel,
            )
            res["name"] = model
            res.pop("_fingerprint", None)
            results.append(res)
        calls = {r["name"]: r["_call"] for r in results if r["status"] == "ok"}
        cpu: dict[str, list[float]] = {}
        times = (
            time_interleaved(calls, warmup=warmup, repeats=steps, cpu_times=cpu) if calls else {}
        )
        base = results[0]["name"] if results[0]["status"] == "ok" else None
        for r in results:
            holder = r.pop("_holder", None)
            r.pop("_call", None)
            if r["name"] not in times:
                continue
            r["step_s"] = statistics.median(times[r["name"]])
            r["step_s_all"] = times[r["name"]]
            r["step_cpu_s"] = statistics.median(cpu[r["name"]])
            if base is not None:
                r["ratio"] = r["step_s"] / statistics.median(times[base])
                r["step_cpu_ratio"] = r["step_cpu_s"] / statistics.median(cpu[base])
            r["loss"] = float(np.asarray(holder["metrics"]["loss"]).reshape(-1)[0])
        rows.append({"name": variant_name(switches), "switches": dict(switches), "models": results})
    return rows


def format_side_by_side(rows: list[dict[str, Any]]) -> str:
    """The printed table of :func:`bench_side_by_side`: one line per (variant, model)."""
    lines = [
        f"{'variant':30s} {'model':42s} {'step':>6s} {'cpu':>6s} | {'wall ms':>8s} "
        f"{'cpu ms':>8s} | {'convs':>5s} {'GFLOP':>7s} {'params':>8s} {'loss':>7s}"
    ]
    for row in rows:
        for r in row["models"]:
            if r["status"] != "ok":
                lines.append(f"{row['name']:30s} {r['name']:42s} {r['status']}: {r['reason']}")
                continue
            lines.append(
                f"{row['name']:30s} {r['name']:42s} {_fmt(r.get('ratio'), '6.3f')} "
                f"{_fmt(r.get('step_cpu_ratio'), '6.3f')} | {r['step_s'] * 1e3:8.2f} "
                f"{r['step_cpu_s'] * 1e3:8.2f} | {len(r['convs_before_xla']):5d} "
                f"{r['flops'] / 1e9:7.3f} {r['num_params']:8d} {r['loss']:7.3f}"
            )
    lines.append(
        "  (step / cpu: ratio of the median wall / CPU step time to the first model's, timed "
        "interleaved; convs: convolutions before XLA's optimisations; GFLOP: XLA's estimate)"
    )
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- entry point
def run(args: argparse.Namespace, command: str, log: Any = print) -> dict[str, Any]:
    """Run the benchmark for parsed ``args``; returns the report (also printed via ``log``).

    The report is ``{"command", "environment", "models": [bench_model(...) per model]}``;
    ``environment`` names the device, versions, parallel backend, compilation cache and the
    load average before and after. ``args.out`` (``.json`` or ``.md``) receives a copy.

    Example (a whole benchmark run: minutes, so not run as a doctest):
      >>> report = run(parse_args(["--models", "digits_cnn", "--size", "8", "--in-channels",
      ...                          "1", "--batch", "4", "--steps", "1"]), "example")
      ... # doctest: +SKIP
    """
    sweep = parse_switches(args.switches) if args.switches else dict(SWITCHES)
    variants = variant_list(sweep, grid=args.grid)
    env = environment_header()
    cache = jax.config.jax_compilation_cache_dir
    env += f"\nparallel: {args.parallel} on 1 device; dtype {args.dtype}; "
    env += f"persistent compilation cache: {cache or 'off'}"
    load_before = _load()
    log(f"train-step benchmark ({command}); load average before: {load_before}", flush=True)
    models = []
    common = dict(
        batch_size=args.batch,
        size=args.size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
        steps=args.steps,
        warmup=args.warmup,
        dtype=args.dtype,
        parallel=args.parallel,
        log=log,
    )
    if args.side_by_side:
        kwargs = {
            m: {"width_multiplier": args.width_multiplier}
            for m in args.models
            if args.width_multiplier != 1.0 and m in _WIDTH_MULTIPLIER_MODELS
        }
        rows = bench_side_by_side(args.models, variants, model_kwargs=kwargs, **common)
        log(format_side_by_side(rows), flush=True)
    for model in [] if args.side_by_side else args.models:
        kwargs = {}
        if args.width_multiplier != 1.0 and model in _WIDTH_MULTIPLIER_MODELS:
            kwargs["width_multiplier"] = args.width_multiplier
        res = bench_model(
            model,
            variants,
            model_kwargs=kwargs,
            warm_compile=not args.no_warm_compile,
            **common,
        )
        log(format_model_table(res), flush=True)
        models.append(res)
    load_after = _load()
    env += f"\nload average (1/5/15 min): before {load_before}, after {load_after}"
    env += f"; {args.steps} timed steps (median) after {args.warmup} warm-up, interleaved"
    if not args.no_warm_compile:
        env += "; each baseline compiled once before, discarded"
    log(env, flush=True)
    report = {"command": command, "environment": env, "models": models}
    if args.side_by_side:
        report["side_by_side"] = rows
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            if args.out.endswith(".md"):
                f.write(format_markdown(report))
            else:
                json.dump(report, f, indent=2)
        log(f"written: {args.out}")
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` fills in the CPU-sized defaults).

    Bad values exit with argparse's usage error naming the option.

    Example:
      >>> parse_args(["--quick"]).batch
      16
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default="resnet20,vgg16",
        help="comma-separated names or import paths <module>:<factory> (a converted model)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="time all --models together per switch setting; ratios to the first model",
    )
    parser.add_argument(
        "--switches",
        nargs="*",
        default=None,
        help="switches to sweep, e.g. padding=zero,learned norm=batch,deconv (default: all)",
    )
    parser.add_argument("--grid", action="store_true", help="every combination of --switches")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: batch 16, few steps")
    parser.add_argument("--batch", type=int, default=None, help="default 256 (--quick: 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 / 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2 / 1)")
    parser.add_argument("--size", type=int, default=32, help="image height = width")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument(
        "--width-multiplier",
        type=float,
        default=None,
        help="for VGG / ImageNet ResNets (default 1, --quick: 0.25)",
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--parallel", default="shard_map", choices=("shard_map", "pmap"))
    parser.add_argument(
        "--no-warm-compile",
        action="store_true",
        help="skip the discarded first compile of each baseline (faster, biased compile ratios)",
    )
    parser.add_argument("--out", default=None, help="write results: .json or .md")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    defaults = (
        dict(batch=16, steps=5, warmup=1, width_multiplier=0.25)
        if args.quick
        else dict(batch=256, steps=10, warmup=2, width_multiplier=1.0)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch", "steps", "warmup", "size", "in_channels", "num_classes"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.width_multiplier <= 0:
        parser.error(f"--width-multiplier must be > 0, got {args.width_multiplier}")
    for model in args.models:
        if is_import_path(model):
            try:
                resolve_factory(model)
            except ValueError as err:
                parser.error(f"--models: {err}")
    unknown = [m for m in args.models if m not in available_models() and not is_import_path(m)]
    if unknown or not args.models:
        parser.error(f"--models must name models from {available_models()}, got {unknown}")
    try:
        parse_switches(args.switches or [])
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m convjax.bench.train_step [options]``; returns the report dict.

    Example (the whole quick benchmark: minutes, so not run as a doctest):
      >>> main(["--quick", "--models", "resnet20", "--switches", "padding=zero,learned"])
      ... # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return run(args, "python -m convjax.bench.train_step " + " ".join(argv))


if __name__ == "__main__":
    main()
