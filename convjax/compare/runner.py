"""``convjax compare <experiment>``: test accuracy of arms that differ in one switch, over seeds.

An *experiment* (a config file in ``convjax/configs/compare/``, configs as code) names a base
trainer config, one or more *groups* (e.g. the VGG-style and the ResNet-20 family, or a 1-epoch
and a longer schedule) and the *arms* (e.g. ``padding=zero`` ... ``padding=learned``). Every arm
of a group is trained with the same model, data, schedule and seeds (at least 3 for a real
comparison); only the arm's switch differs. The whole experiment shows one progress bar.

Each arm is compiled once: its train and eval steps are built from the first seed's model and
reused for every other seed (the seeds change only the values of the state and the data order,
never its shapes), so an arm costs one compilation however many seeds it runs.

Written to the workdir (default ``runs/compare/<experiment>[_quick]``):

* ``runs.jsonl``: one line per (group, arm, seed), written as soon as the seed finishes: test
  accuracy and loss after every epoch, train seconds per epoch (compilation excluded; wall
  clock, and the process's CPU seconds, which other jobs on the machine inflate far less),
  parameter count, learned kernel sizes, and the fingerprint of the seed's resolved run spec;
* ``results.json``: the experiment, per-arm mean / std (sample std, ``ddof=1``) of the final
  test accuracy, mean train time per epoch, parameters, compilations per arm, versions;
* ``table.md``: the Markdown table (test accuracy mean ± std, the paired per-seed difference
  to the group's first arm with its 95 % Student-t interval, per-seed accuracies, train time
  per epoch, parameters) and the training recipe;
* ``curves.png``: per group, test accuracy and train loss against epoch and test accuracy
  against train seconds, per arm (mean over seeds, ± std; 1-epoch groups as points with error
  bars); ``kernel_sizes.png`` for experiments that record FlexConv kernel sizes.

An interrupted experiment resumes: run the same command on the same workdir and every
(group, arm, seed) already in ``runs.jsonl`` with the same resolved spec (fingerprint) is kept,
not trained again; a seed whose spec changed is trained again (``--fresh`` retrains all). A
long experiment can so be split over several sessions (``--arms``/``--seeds`` pick the part;
records of the seeds and arms outside the part stay in ``runs.jsonl``, out of that run's
table, and a later run over the whole experiment keeps them).

Every shipped experiment trains by default under its paper's recipe as the authors' code ran
it, scaled to the epoch budget (``--recipe=paper``; sources in each config's docstring), and
under the common Adam 3e-3 recipe with ``--recipe=adam``; results.json and table.md record
which.

Usage::

    convjax compare padding --quick          # a few minutes on 2 CPU cores (digits)
    convjax compare pooling                  # the full CPU experiment (Fashion-MNIST IDX)
    convjax compare norm --dataset=tfds:cifar10 --data_dir=~/tensorflow_datasets
    python -m convjax.compare conv --quick --seeds=0,1,2 --workdir=runs/conv

The methods compared are the Padding Module (Alrasheedi et al. 2023, Sec. 4 classification
results), SoftPool (Stergiou et al. 2021, Sec. 5 ImageNet top-1), Network Deconvolution (Ye et
al. 2020, Table 1: 1-epoch and 20-epoch CIFAR columns) and FlexConv (Romero et al. 2022,
Table 3: FlexNet vs the same net with 3x3 convs; Fig. 5: learned kernel sizes).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import hashlib
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from convjax.configs import ConfigFileError, load_config_module
from convjax.data import DataError
from convjax.nnx import FlexConv
from convjax.ops.gaussian_mask import mask_crop_size
from convjax.train.config import ConfigError, parse_overrides, resolve_spec
from convjax.train.distributed import DataParallel, xla_compiler_options
from convjax.train.factory import compute_dtype, make_train_setup
from convjax.train.loop import evaluate, make_data, versions
from convjax.train.spec import TrainSpec

#: Directory of the shipped experiments (``convjax compare <name>``).
EXPERIMENT_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs" / "compare"

RUNS_FILE = "runs.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"
CURVES_FILE = "curves.png"
KERNEL_SIZES_FILE = "kernel_sizes.png"


# ------------------------------------------------------------------------------ experiments
def shipped_experiments() -> list[str]:
    """Names of the experiments shipped in ``convjax/configs/compare``.

    Example:
      >>> "padding" in shipped_experiments()
      True
    """
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_experiment(name: str, *, quick: bool = False, recipe: str | None = None) -> dict[str, Any]:
    """The experiment dict of a shipped name or a config file path (``get_config(quick)``).

    Args:
      name: a shipped experiment (``padding``, ``pooling``, ``norm``, ``conv``) or the path of
        a Python file whose ``get_config(quick: bool)`` returns an experiment mapping.
      quick: ask the file for its ``--quick`` variant.
      recipe: the training recipe (default ``"paper"`` when the experiment has one).

    Returns:
      A checked experiment dict (see :func:`check_experiment`).

    Raises:
      ValueError: an unknown name (listing the shipped ones) or a malformed experiment.

    Example:
      >>> load_experiment("pooling", quick=True)["arms"].keys()
      dict_keys(['max', 'avg', 'soft'])
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be an experiment name or file path, got {name!r}.")
    path = pathlib.Path(name)
    if not path.exists():
        path = EXPERIMENT_DIR / f"{name.removesuffix('.py')}.py"
        if not path.exists():
            raise ValueError(
                f"`experiment` {name!r} is neither a file nor a shipped experiment; shipped "
                f"experiments are {shipped_experiments()}."
            )
    module = load_config_module(path, flag="experiment")
    exp = _plain(module.get_config(quick))
    if recipe is not None:
        exp = {**exp, "recipe": recipe}
    return check_experiment(exp)


def _plain(tree: Any) -> Any:
    """ConfigDicts / mappings -> plain dicts (order kept), tuples kept."""
    if hasattr(tree, "to_dict"):
        tree = tree.to_dict()
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def check_experiment(exp: Mapping[str, Any]) -> dict[str, Any]:
    """Check an experiment mapping and fill its optional fields.

    Fields: ``name`` (str), ``title`` (str), ``switch`` (the config field the arms change),
    ``base`` (partial trainer config, ``num_epochs`` >= 1), ``groups`` (name -> partial config
    applied over ``base``; default one group ``"all"``), ``arms`` (name -> partial config, at
    least 2), ``seeds`` (distinct ints >= 0), ``kernel_sizes`` (record FlexConv kernel sizes
    every epoch; default False), ``paper`` (a line on the paper's own numbers; default ""),
    ``recipes`` (name -> ``{"config": partial trainer config, "source": str}``, the training
    recipes the experiment can run under; default none) and ``recipe`` (the one in use:
    default ``"paper"`` when there is one, else the first; ``None`` without recipes).

    Example:
      >>> check_experiment({"name": "x", "switch": "pool", "base": {"num_epochs": 1},
      ...                   "arms": {"max": {"pool": "max"}, "avg": {"pool": "avg"}},
      ...                   "seeds": (0, 1)})["groups"]
      {'all': {}}
    """
    if not isinstance(exp, Mapping):
        raise TypeError(f"`experiment` must be a mapping, got {type(exp).__name__}.")
    out = dict(exp)
    for key in ("name", "switch"):
        if not isinstance(out.get(key), str) or not out[key]:
            raise ValueError(
                f"`experiment['{key}']` must be a non-empty str, got {out.get(key)!r}."
            )
    out.setdefault("title", out["name"])
    out.setdefault("paper", "")
    out.setdefault("kernel_sizes", False)
    base = out.get("base")
    if not isinstance(base, Mapping):
        raise ValueError(f"`experiment['base']` must be a partial trainer config, got {base!r}.")
    epochs = base.get("num_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`experiment['base']['num_epochs']` must be an int >= 1, got {epochs!r}.")
    groups = out.get("groups") or {"all": {}}
    arms = out.get("arms")
    for what, table, least in (("groups", groups, 1), ("arms", arms, 2)):
        if not isinstance(table, Mapping) or len(table) < least:
            raise ValueError(
                f"`experiment['{what}']` must map at least {least} name(s) to partial configs, "
                f"got {table!r}."
            )
        for key, value in table.items():
            if not isinstance(key, str) or not isinstance(value, Mapping):
                raise ValueError(
                    f"`experiment['{what}']` entries must be str -> mapping, got {key!r}: "
                    f"{value!r}."
                )
    seeds = out.get("seeds")
    if (
        not isinstance(seeds, (list, tuple))
        or not seeds
        or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ValueError(f"`experiment['seeds']` must be distinct ints >= 0, got {seeds!r}.")
    out.update(groups=dict(groups), arms=dict(arms), seeds=tuple(seeds), base=dict(base))
    recipes = out.get("recipes") or {}
    if not isinstance(recipes, Mapping) or any(
        not isinstance(k, str)
        or not isinstance(v, Mapping)
        or not isinstance(v.get("config"), Mapping)
        for k, v in recipes.items()
    ):
        raise ValueError(
            "`experiment['recipes']` must map names to {'config': partial trainer config, "
            f"'source': str}}, got {recipes!r}."
        )
    out["recipes"] = {k: {"config": dict(v["config"]), "source": str(v.get("source", ""))}
                      for k, v in recipes.items()}  # fmt: skip
    recipe = out.get("recipe")
    if recipe is None and recipes:
        recipe = "paper" if "paper" in recipes else next(iter(recipes))
    if recipe is not None and recipe not in recipes:
        raise ValueError(
            f"`recipe` {recipe!r} is not one of the experiment's recipes {list(recipes)}."
        )
    out["recipe"] = recipe
    return out


def _deep_update(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_update(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def arm_config(exp: Mapping, group: str, arm: str, seed: int, overrides: Mapping = ()) -> TrainSpec:
    """The resolved spec of one run: base <- recipe <- group <- arm <- overrides <- seed
    (the recipe is ``exp["recipe"]`` of ``exp["recipes"]``, if any).

    Example:
      >>> exp = load_experiment("pooling", quick=True)
      >>> arm_config(exp, "VGG-style", "soft", 2).model.pool
      'soft'
    """
    cfg = dict(exp["base"])
    if exp.get("recipe") is not None:
        cfg = _deep_update(cfg, exp["recipes"][exp["recipe"]]["config"])
    cfg = _deep_update(cfg, exp["groups"][group])
    cfg = _deep_update(cfg, exp["arms"][arm])
    cfg = _deep_update(cfg, dict(overrides))
    cfg["seed"] = int(seed)
    return resolve_spec(cfg)


def spec_fingerprint(spec: TrainSpec) -> str:
    """A short hash of a resolved run spec (its ``to_config()`` as sorted JSON): two runs with
    equal fingerprints train the same model on the same data with the same recipe and seed.

    Example:
      >>> exp = load_experiment("pooling", quick=True)
      >>> a = spec_fingerprint(arm_config(exp, "VGG-style", "soft", 0))
      >>> a == spec_fingerprint(arm_config(exp, "VGG-style", "soft", 0)), len(a)
      (True, 16)
      >>> a == spec_fingerprint(arm_config(exp, "VGG-style", "soft", 1))
      False
    """
    text = json.dumps(spec.to_config(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finished_runs(runs_path: pathlib.Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """``{(group, arm, seed): record}`` of a previous ``runs.jsonl`` (a torn last line, as a
    kill leaves it, is dropped)."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not runs_path.is_file():
        return done
    for line in runs_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            done[(record["group"], record["arm"], int(record["seed"]))] = record
        except (ValueError, KeyError, TypeError):
            continue
    return done


# ------------------------------------------------------------------------------ one arm
@dataclasses.dataclass
class ArmProgram:
    """One arm's compiled steps, shared by all its seeds.

    Attributes:
      train_step / eval_step: compiled per-device steps (``DataParallel.compile``).
      model_def: the split model whose graph the steps close over.
      tx_task / tx_pad / schedule: the optimizers (each seed's state is initialised with them).
      traces: how many times the train step was traced (1 when every seed reused it).
    """

    dp: Any
    model_def: Any
    tx_task: Any
    tx_pad: Any
    schedule: Any
    train_step: Callable
    eval_step: Callable
    traces: list


def _new_state(config: TrainSpec, info: Any, program: ArmProgram | None, num_steps: int) -> tuple:
    """(program, host TrainState, num_params) for ``config.run.seed``; builds the program once."""
    dp = program.dp if program is not None else DataParallel(config.run.parallel)
    setup = make_train_setup(
        config,
        num_classes=int(info.num_classes),
        in_features=int(info.input_shape[-1]),
        num_steps=num_steps,
        axis_name=dp.axis_name,
    )
    if program is None:
        traces: list = []

        def counted_step(state: Any, batch: Any) -> Any:
            traces.append(1)  # runs once per trace, never per call
            return setup.train_step(state, batch)

        options = xla_compiler_options(compute_dtype(config.run.dtype))
        program = ArmProgram(
            dp=dp,
            model_def=setup.model_def,
            tx_task=setup.tx_task,
            tx_pad=setup.tx_pad,
            schedule=setup.schedule,
            train_step=dp.compile(counted_step, donate_state=True, compiler_options=options),
            eval_step=dp.compile(setup.eval_step, compiler_options=options),
            traces=traces,
        )
    return program, setup.state, (setup.num_params, setup.num_padding_params)


def flex_kernel_sizes(model_def: Any, state: Any, *, continuous: bool = False) -> dict[str, float]:
    """Learned kernel size of every FlexConv layer (FlexConv paper, Sec. 3.2: the crop
    ``2 floor((|mu| + sigma sqrt(-2 ln T)) / h) + 1`` of the Gaussian mask at threshold T, on
    the grid of spacing ``h = 2 / (horizon - 1)``; causal layers ``floor((1 - mu + sigma
    sqrt(-2 ln T)) / h) + 1``).

    Args:
      model_def: the split model (:class:`convjax.train.state.ModelDef`).
      state: a host :class:`convjax.train.state.TrainState` (or anything with ``params``,
        ``pad_params`` and ``stats``).
      continuous: the same expression without ``floor`` (a real number of grid points, the
        largest over dims), so slow changes of the mask show before they change the crop.

    Returns:
      ``{layer path: kernel size}`` (empty for a model without FlexConv layers).

    Example:
      >>> sizes = flex_kernel_sizes(program.model_def, state)  # doctest: +SKIP
      >>> sizes  # doctest: +SKIP
      {'stem/conv': 5.0, 'blocks/0/conv1/conv': 5.0, ...}
    """
    model = model_def.merge(state.params, state.pad_params, state.stats, train=False)
    out: dict[str, float] = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, FlexConv) and node.mask_mu is not None:
            mu, sigma = np.asarray(node.mask_mu[...]), np.asarray(node.sigma)
            horizon, threshold = int(node.kernel_size), float(node.mask_threshold)
            if continuous:
                step = 2.0 / (horizon - 1)
                reach = sigma * np.sqrt(-2.0 * np.log(threshold))
                q = ((1.0 - mu + reach) if node.causal else (np.abs(mu) + reach)) / step
                size = float(np.clip(np.max(q + 1.0 if node.causal else 2.0 * q + 1.0), 1, horizon))
            else:
                size = float(
                    mask_crop_size(mu, sigma, horizon, threshold, causal=bool(node.causal))
                )
            out["/".join(str(p) for p in path)] = size
    return out


def _run_seed(
    config: Any,
    program: ArmProgram | None,
    *,
    bar: Any,
    record_kernel_sizes: bool,
    loaders: Any = None,
) -> tuple[ArmProgram, dict[str, Any]]:
    """Train one seed of an arm for ``config.run.num_epochs`` epochs, evaluating after each."""
    train_iter, eval_batches, info = loaders if loaders is not None else make_data(config)
    spe = int(info.steps_per_epoch)
    num_steps = config.run.num_epochs * spe
    program, state, (num_params, num_pad) = _new_state(config, info, program, num_steps)
    first_call = len(program.traces) == 0
    dp = program.dp
    record: dict[str, Any] = {
        "seed": config.run.seed,
        "num_params": num_params,
        "num_padding_params": num_pad,
        "steps_per_epoch": spe,
        "test_accuracy": [],
        "test_loss": [],
        "train_loss": [],
        "epoch_time_s": [],
        "epoch_cpu_s": [],
        "compile_time_s": None,
    }
    if record_kernel_sizes:
        record["kernel_sizes"] = [flex_kernel_sizes(program.model_def, state)]
        record["kernel_extent"] = [flex_kernel_sizes(program.model_def, state, continuous=True)]
    dstate = dp.replicate(state)
    for epoch in range(config.run.num_epochs):
        losses = []
        t0, c0 = time.perf_counter(), time.process_time()
        timed_steps = spe
        for k in range(spe):
            dstate, metrics = program.train_step(dstate, dp.shard_batch(next(train_iter)))
            losses.append(metrics["loss"])
            if first_call and epoch == 0 and k == 0:
                # The first call compiles: time it apart and extrapolate the epoch from the rest.
                jax.block_until_ready(metrics)
                t1 = time.perf_counter()
                record["compile_time_s"] = t1 - t0
                t0, c0, timed_steps = t1, time.process_time(), spe - 1
            bar.update(1)
        jax.block_until_ready(dstate)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        scale = spe / timed_steps if timed_steps else math.nan
        record["epoch_time_s"].append(elapsed * scale)
        record["epoch_cpu_s"].append(cpu * scale)
        loss = float(np.mean([np.asarray(jax.device_get(v)).mean() for v in losses]))
        result = evaluate(dp, program.eval_step, dstate, eval_batches)
        record["train_loss"].append(loss)
        record["test_accuracy"].append(float(result["accuracy"]))
        record["test_loss"].append(float(result["loss"]))
        if not (math.isfinite(loss) and math.isfinite(result["loss"])):
            raise FloatingPointError(
                f"seed {config.run.seed}: non-finite loss at epoch {epoch + 1} (train {loss}, "
                f"test {result['loss']}); lower the learning rate of this experiment."
            )
        if record_kernel_sizes:
            host = dp.unreplicate(dstate)
            record["kernel_sizes"].append(flex_kernel_sizes(program.model_def, host))
            record["kernel_extent"].append(
                flex_kernel_sizes(program.model_def, host, continuous=True)
            )
    record["test_examples"] = int(result["count"])
    return program, record


# ------------------------------------------------------------------------------ statistics
def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile (``0.5 < p < 1``) of Student's t with ``dof`` (int >= 1) degrees.

    Solves ``P(|T| < t) = 2 p - 1`` by bisection on the closed-form CDF for integer degrees of
    freedom (Abramowitz & Stegun 26.7.3-4, ``theta = atan(t / sqrt(dof))``): odd ``dof``:
    ``2 / pi (theta + sin(theta) sum_k c_k cos^(2k+1)(theta))``; even: ``sin(theta) sum_k
    d_k cos^(2k)(theta)``, with ``c_k, d_k`` the products of odd over even integers.

    Example:
      >>> round(student_t_quantile(0.975, 4), 4)
      2.7764
    """
    if not isinstance(dof, int) or isinstance(dof, bool) or dof < 1:
        raise ValueError(f"`dof` must be an int >= 1, got {dof!r}.")
    if not 0.5 < p < 1.0:
        raise ValueError(f"`p` must be in (0.5, 1), got {p!r}.")

    def central(t: float) -> float:  # P(|T| < t)
        theta = math.atan(t / math.sqrt(dof))
        c, sn = math.cos(theta), math.sin(theta)
        if dof % 2:
            if dof == 1:
                return 2 * theta / math.pi
            term, total = c, c
            for k in range(1, (dof - 1) // 2):
                term *= c * c * (2 * k) / (2 * k + 1)
                total += term
            return 2 / math.pi * (theta + sn * total)
        term, total = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= c * c * (2 * k - 1) / (2 * k)
            total += term
        return sn * total

    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while central(hi) < target:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if central(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def paired_difference(
    values: Sequence[float], reference: Sequence[float], level: float = 0.95
) -> dict[str, Any]:
    """Mean per-seed difference ``values - reference`` with its Student-t confidence interval.

    ``d_i = values_i - reference_i`` (same seed ``i``); ``mean(d) +- t_{(1+level)/2, n-1}
    std(d, ddof=1) / sqrt(n)``. With one pair the interval is undefined (``None``).

    Returns:
      ``{"n", "mean", "std", "low", "high"}``.

    Example:
      >>> d = paired_difference([0.9, 0.92, 0.91], [0.88, 0.9, 0.9])
      >>> round(d["mean"], 4), round(d["low"], 4), round(d["high"], 4)
      (0.0167, 0.0023, 0.031)
    """
    a = np.asarray(values, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 1:
        raise ValueError(
            f"`values` and `reference` must be equally long 1-D sequences, got {a.shape} and "
            f"{b.shape}."
        )
    d = a - b
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "low": None, "high": None}
    std = float(d.std(ddof=1))
    half = student_t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


# ------------------------------------------------------------------------------ the experiment
def summarize(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (group, arm) statistics of per-seed run records, in first-seen order.

    The final test accuracy is the last epoch's; ``std`` is the sample standard deviation
    (``ddof=1``; 0.0 for a single seed). ``epoch_time_s`` is the mean over every epoch of every
    seed (compilation excluded), ``epoch_cpu_s`` the same in process CPU seconds (``None``
    when no record has them). ``difference`` is the paired per-seed difference of the final
    accuracy to the group's first arm (the baseline), over the seeds both ran, with its 95 %
    Student-t interval (:func:`paired_difference`; ``None`` for the baseline itself).
    ``train_loss_mean``/``_std`` and ``time_mean`` (cumulative train seconds at each epoch's
    end, mean over seeds; ``cpu_time_mean`` the same in CPU seconds, ``None`` unless every
    epoch has them) feed the loss and cost plots.

    Example:
      >>> summarize([{"group": "g", "arm": "a", "seed": s, "test_accuracy": [0.5, acc],
      ...             "epoch_time_s": [1.0, 1.0], "num_params": 10} for s, acc in
      ...            enumerate([0.8, 0.9])])[0]["accuracy_mean"]
      0.85
    """
    order: list[tuple[str, str]] = []
    by_key: dict[tuple[str, str], list] = {}
    for r in runs:
        key = (r["group"], r["arm"])
        if key not in by_key:
            order.append(key)
            by_key[key] = []
        by_key[key].append(r)
    first_arm: dict[str, str] = {}
    for group, arm in order:
        first_arm.setdefault(group, arm)
    rows = []
    for group, arm in order:
        rs = by_key[(group, arm)]
        finals = np.array([r["test_accuracy"][-1] for r in rs], np.float64)
        curves = np.array([r["test_accuracy"] for r in rs], np.float64)
        times = np.concatenate([np.asarray(r["epoch_time_s"], np.float64) for r in rs])
        cpu = [t for r in rs for t in r.get("epoch_cpu_s") or ()]
        has_loss = all(r.get("train_loss") for r in rs)
        losses = np.array([r["train_loss"] for r in rs], np.float64) if has_loss else None
        elapsed = np.array([np.cumsum(r["epoch_time_s"]) for r in rs], np.float64)
        with_cpu = all(len(r.get("epoch_cpu_s") or ()) == len(r["epoch_time_s"]) for r in rs)
        cpu_elapsed = [np.cumsum(r["epoch_cpu_s"]) for r in rs] if with_cpu else None
        base_runs = {int(r["seed"]): r for r in by_key[(group, first_arm[group])]}
        difference = None
        if arm != first_arm[group]:
            pairs = [
                (r["test_accuracy"][-1], base_runs[int(r["seed"])]["test_accuracy"][-1])
                for r in rs
                if int(r["seed"]) in base_runs
            ]
            if pairs:
                difference = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        rows.append(
            {
                "group": group,
                "arm": arm,
                "seeds": [int(r["seed"]) for r in rs],
                "accuracies": [float(a) for a in finals],
                "accuracy_mean": round(float(finals.mean()), 10),
                "accuracy_std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                "curve_mean": curves.mean(axis=0).tolist(),
                "curve_std": (
                    curves.std(axis=0, ddof=1) if len(rs) > 1 else 0 * curves[0]
                ).tolist(),
                "epoch_time_s": float(np.nanmean(times)),
                "epoch_cpu_s": float(np.nanmean(cpu)) if cpu else None,
                "train_loss_mean": [] if losses is None else losses.mean(axis=0).tolist(),
                "train_loss_std": (
                    []
                    if losses is None
                    else (losses.std(axis=0, ddof=1) if len(rs) > 1 else 0 * losses[0]).tolist()
                ),
                "time_mean": np.nanmean(elapsed, axis=0).tolist(),
                "cpu_time_mean": (
                    np.nanmean(np.array(cpu_elapsed), axis=0).tolist() if cpu_elapsed else None
                ),
                "difference": difference,
                "num_params": int(rs[0]["num_params"]),
                "num_padding_params": int(rs[0].get("num_padding_params", 0)),
            }
        )
    return rows


def _difference_cell(diff: Mapping[str, Any] | None) -> str:
    if diff is None:
        return "ref"
    if diff.get("low") is None:
        return f"{100 * diff['mean']:+.2f} (n={diff['n']})"
    return f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"


def markdown_table(rows: Sequence[Mapping[str, Any]], *, switch: str = "arm") -> str:
    """The Markdown table of :func:`summarize` rows (accuracies in %).

    Columns: group, the switch, test accuracy mean ± std, the paired per-seed difference to
    the group's first arm with its 95 % Student-t confidence interval (``[low, high]``; an
    interval that excludes 0 is a difference the seeds resolve), per-seed accuracies, train
    seconds per epoch (wall clock; in brackets the process's CPU seconds, where recorded: on
    a machine shared with other jobs they are the steadier cost), parameters (``+ N pad``:
    the Padding Module's own parameters, trained by its own loss).

    Example:
      >>> print(markdown_table([{"group": "g", "arm": "max", "accuracy_mean": 0.9,
      ...     "accuracy_std": 0.01, "accuracies": [0.89, 0.91], "epoch_time_s": 1.5,
      ...     "num_params": 1000}], switch="pool").splitlines()[2])
      | g | max | 90.00 ± 1.00 | ref | 89.0, 91.0 | 1.50 | 1,000 |
    """
    lines = [
        f"| group | {switch} | test acc. % (mean ± std) | vs first arm, paired (95 % CI) | "
        "per seed | train s/epoch (CPU s) | params |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    seen: set[str] = set()
    for r in rows:
        first = r["group"] not in seen
        seen.add(r["group"])
        delta = "ref" if first else _difference_cell(r.get("difference"))
        seeds = ", ".join(f"{100 * a:.1f}" for a in r["accuracies"])
        pad = r.get("num_padding_params", 0)
        params = f"{r['num_params']:,}" + (f" + {pad:,} pad" if pad else "")
        cost = f"{r['epoch_time_s']:.2f}"
        if r.get("epoch_cpu_s") is not None:
            cost += f" ({r['epoch_cpu_s']:.2f})"
        lines.append(
            f"| {r['group']} | {r['arm']} | {100 * r['accuracy_mean']:.2f} ± "
            f"{100 * r['accuracy_std']:.2f} | {delta} | {seeds} | {cost} | {params} |"
        )
    return "\n".join(lines) + "\n"


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _figure(
    nrows: int,
    ncols: int,
    path: str | None,
    panel: tuple[float, float],
    height_ratios: Sequence[float] | None = None,
) -> tuple:
    """A ``nrows x ncols`` grid of ``panel``-sized axes (rows optionally ``height_ratios``): a
    pyplot figure to show (``path`` None), else a bare ``matplotlib.figure.Figure`` to save (no
    pyplot state, no backend switch)."""
    figsize = (panel[0] * ncols, panel[1] * nrows)
    grid = {"gridspec_kw": {"height_ratios": list(height_ratios)}} if height_ratios else {}
    if path is None:
        import matplotlib.pyplot as plt

        return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **grid)
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **grid)


def _draw(ax: Any, x: Any, mean: Any, std: Any, label: str, color: str, offset: float) -> None:
    """A line with a ± std band, or for a single point a marker with error bars (shifted by
    ``offset`` so the arms of a 1-epoch group do not hide each other)."""
    x, mean, std = (np.asarray(v, np.float64) for v in (x, mean, std))
    if mean.size == 1:
        ax.errorbar(x + offset, mean, yerr=std, fmt="o", ms=5, capsize=4, color=color, label=label)
    else:
        ax.plot(x, mean, marker="o", ms=3, color=color, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=color)


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | None = None, *, title: str = ""):
    """Per group (columns), per arm (mean ± std over seeds): test accuracy against epoch,
    train loss against epoch, and test accuracy against train seconds (the cost of a method:
    CPU seconds of the training process when every row has them, which other jobs on the
    machine inflate far less than wall-clock time; wall-clock seconds otherwise). Groups of
    one epoch are drawn as points with error bars, the arms side by side.

    Returns the matplotlib figure (saved to ``path`` when given).

    Example:
      >>> fig = plot_curves(load_results("runs/compare/pooling_quick")["rows"])  # doctest: +SKIP
    """
    groups = list(dict.fromkeys(r["group"] for r in rows))
    use_cpu = all(r.get("cpu_time_mean") for r in rows)
    clock = "cpu_time_mean" if use_cpu else "time_mean"
    fig, axes = _figure(3, len(groups), path, (5.0, 3.3))
    for col, group in enumerate(groups):
        members = [r for r in rows if r["group"] == group]
        single = all(len(r["curve_mean"]) == 1 for r in members)
        width = 0.5 / max(len(members), 1)
        for i, r in enumerate(members):
            color = f"C{i}"
            offset = (i - (len(members) - 1) / 2) * width if single else 0.0
            epochs = np.arange(1, len(r["curve_mean"]) + 1)
            acc = 100 * np.asarray(r["curve_mean"])
            acc_std = 100 * np.asarray(r["curve_std"])
            _draw(axes[0, col], epochs, acc, acc_std, r["arm"], color, offset)
            loss = r.get("train_loss_mean")
            if loss:
                _draw(axes[1, col], epochs, loss, r["train_loss_std"], r["arm"], color, offset)
            if r.get(clock):
                _draw(axes[2, col], r[clock], acc, acc_std, r["arm"], color, 0.0)
        for row, ylabel in enumerate(("test accuracy %", "train loss", "test accuracy %")):
            ax = axes[row, col]
            seconds = "train CPU seconds (mean)" if use_cpu else "train seconds (mean)"
            ax.set(ylabel=ylabel, xlabel="epoch" if row < 2 else seconds)
            if row < 2:
                ax.xaxis.set_major_locator(_integer_ticks())
                if single:
                    ax.set_xlim(0.5, 1.5)
                    ax.set_xticks([1])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0, col].set_title(group)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_kernel_sizes(runs: Sequence[Mapping[str, Any]], path: str | None = None):
    """Learned FlexConv kernel size per layer against epoch (epoch 0 = initialisation): the
    continuous extent (solid, mean over seeds) and the integer crop the layer uses (dashed,
    same colour); see :func:`flex_kernel_sizes`.

    Returns the figure, or ``None`` when no run recorded kernel sizes.
    """
    recorded = [r for r in runs if r.get("kernel_sizes") and r["kernel_sizes"][0]]
    if not recorded:
        return None
    arms = list(dict.fromkeys((r["group"], r["arm"]) for r in recorded))
    fig, axes = _figure(1, len(arms), path, (5.0, 3.6))
    for ax, (group, arm) in zip(axes[0], arms):
        rs = [r for r in recorded if (r["group"], r["arm"]) == (group, arm)]
        for i, layer in enumerate(rs[0]["kernel_sizes"][0]):
            crop = np.array([[e[layer] for e in r["kernel_sizes"]] for r in rs], np.float64)
            epochs = np.arange(crop.shape[1])
            if all(r.get("kernel_extent") for r in rs):
                extent = np.array([[e[layer] for e in r["kernel_extent"]] for r in rs], np.float64)
                ax.plot(epochs, extent.mean(0), color=f"C{i}", marker="o", ms=3, label=layer)
                ax.plot(epochs, crop.mean(0), color=f"C{i}", ls="--", lw=0.8)
            else:
                ax.plot(epochs, crop.mean(0), color=f"C{i}", marker="o", ms=3, label=layer)
        ax.set(
            title=f"{group} / {arm}",
            xlabel="epoch",
            ylabel="kernel size (extent; dashed: crop)",
        )
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _experiment_label(results: Mapping[str, Any]) -> str:
    """``pooling``, ``pooling --quick``: the experiment a results dict measured (not the recipe)."""
    name = results["experiment"].get("name", "experiment")
    return f"{name} --quick" if results.get("quick") else name


def plot_differences(
    workdirs: Sequence[str | os.PathLike | Mapping[str, Any]], path: str | None = None
):
    """Every arm's paired per-seed difference to its group's first arm, with its 95 %
    Student-t interval, for several compare workdirs at once: one panel per experiment
    (``pooling``, ``pooling --quick``, ...), one row per (group, arm), one colour per recipe.
    The same experiment run under ``--recipe=paper`` and ``--recipe=adam`` (two workdirs) lands
    in one panel, so how much a claim depends on the recipe reads off one figure. An interval
    that does not cross the dashed zero line is a difference the seeds resolve; an arm run with
    one seed is a point without an interval.

    Args:
      workdirs: compare workdirs (paths), or what :func:`load_results` returned for them.
      path: save the figure there (a bare ``matplotlib.figure.Figure``, no pyplot state);
        ``None`` returns a pyplot figure to show.

    Returns the figure. Raises ``ValueError`` when no workdir holds a difference (every group
    has a single arm).

    Example:
      >>> workdirs = ["runs/compare/pooling", "runs/compare/pooling_adam"]
      >>> fig = plot_differences(workdirs, "differences.png")  # doctest: +SKIP
    """
    loaded = [w if isinstance(w, Mapping) else load_results(w) for w in workdirs]
    panels: dict[str, list[tuple[str, str]]] = {}
    recipes: list[str] = []
    points: dict[tuple[str, str, str, str], Mapping[str, Any]] = {}
    reference: dict[tuple[str, str], str] = {}  # (panel, group) -> the group's first arm
    for res in loaded:
        label, recipe = _experiment_label(res), res.get("recipe") or "paper"
        for row in res["rows"]:
            if row.get("difference") is None:
                reference.setdefault((label, row["group"]), row["arm"])
                continue
            key = (row["group"], row["arm"])
            if key not in panels.setdefault(label, []):
                panels[label].append(key)
            if recipe not in recipes:
                recipes.append(recipe)
            points[(label, *key, recipe)] = row["difference"]
    if not panels:
        raise ValueError("`workdirs` hold no arm with a difference to a reference arm.")
    heights = [len(rows) + 1 for rows in panels.values()]  # a panel's height follows its rows
    mean_height = (0.42 * sum(heights) + 0.9 * len(panels)) / len(panels)
    fig, axes = _figure(len(panels), 1, path, (7.0, mean_height), height_ratios=heights)
    spread = 0.5 / max(len(recipes), 1)
    for ax, (label, rows) in zip(axes[:, 0], panels.items()):
        for i, recipe in enumerate(recipes):
            offset = ((len(recipes) - 1) / 2 - i) * spread
            ys, xs, lows, highs = [], [], [], []
            for y, key in enumerate(rows):
                diff = points.get((label, *key, recipe))
                if diff is None:
                    continue
                ys.append(len(rows) - 1 - y + offset)
                xs.append(100 * diff["mean"])
                if diff.get("low") is None:  # one seed: a point without an interval
                    lows.append(0.0)
                    highs.append(0.0)
                else:
                    lows.append(100 * (diff["mean"] - diff["low"]))
                    highs.append(100 * (diff["high"] - diff["mean"]))
            if xs:
                ax.errorbar(
                    xs,
                    ys,
                    xerr=[lows, highs],
                    fmt="o",
                    ms=5,
                    capsize=3,
                    color=f"C{i}",
                    label=f"recipe {recipe}",
                )
        ax.axvline(0.0, color="k", ls="--", lw=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(
            [f"{g}: {a} - {reference.get((label, g), 'first')}" for g, a in reversed(rows)],
            fontsize=8,
        )
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("test accuracy difference to the group's first arm, points (95 % CI)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def load_results(workdir: str | os.PathLike) -> dict[str, Any]:
    """``results.json`` of a compare workdir plus its per-seed ``runs`` (from ``runs.jsonl``).

    Example:
      >>> res = load_results("runs/compare/pooling_quick")  # doctest: +SKIP
      >>> print(res["table"])  # doctest: +SKIP
    """
    workdir = pathlib.Path(workdir)
    path = workdir / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"`workdir` {workdir} holds no {RESULTS_FILE} (not a compare run).")
    results = json.loads(path.read_text())
    runs_path = workdir / RUNS_FILE
    results["runs"] = (
        [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
        if runs_path.exists()
        else []
    )
    return results


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, flush=True)

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _total_steps(exp: Mapping, overrides: Mapping) -> tuple[int, dict]:
    """Total train steps of the experiment (for the one progress bar) and the data infos."""
    total, infos = 0, {}
    for group in exp["groups"]:
        cfg = arm_config(exp, group, next(iter(exp["arms"])), exp["seeds"][0], overrides)
        key = (cfg.data, cfg.run.batch_size)
        if key not in infos:
            infos[key] = make_data(cfg).info
        spe = int(infos[key].steps_per_epoch)
        total += spe * cfg.run.num_epochs * len(exp["arms"]) * len(exp["seeds"])
    return total, infos


def run_experiment(
    experiment: str | Mapping[str, Any],
    workdir: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    recipe: str | None = None,
    progress: bool = True,
    plots: bool = True,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run every (group, arm, seed) of an experiment and write its table and plots.

    Args:
      experiment: a shipped name / file path (see :func:`load_experiment`) or an experiment
        mapping (see :func:`check_experiment`).
      workdir: output directory (default ``runs/compare/<name>[_quick]``).
      quick: the experiment's ``--quick`` variant (when ``experiment`` is a name).
      overrides: partial trainer config applied to every run (e.g. ``{"dataset":
        "tfds:cifar10"}``, ``{"num_epochs": 2}``).
      seeds: replaces the experiment's seeds; arms: run only these arms (in this order).
      recipe: the training recipe (``"paper"``, the default where the experiment has it, or
        ``"adam"``); a non-default recipe gets its own default workdir
        ``runs/compare/<name>[_quick]_<recipe>``.
      progress: one tqdm bar over every train step of the experiment (on a terminal;
        otherwise, or with ``progress=False``, one line per finished seed).
      plots: write ``curves.png`` (and ``kernel_sizes.png``); needs matplotlib.
      fresh: train every seed again. By default a seed already in the workdir's
        ``runs.jsonl`` with the same resolved spec (:func:`spec_fingerprint`) is kept, so an
        interrupted experiment resumes where it stopped.

    Returns:
      ``results.json``'s content: ``experiment``, ``rows`` (see :func:`summarize`),
      ``table`` (Markdown), ``compilations`` (``{"group/arm": traces of the train step}``,
      arms that trained in this call), ``resumed`` (``"group/arm/seed"`` kept from an earlier
      call), ``workdir``, ``versions``, ``wall_time_s``.

    Example:
      >>> res = run_experiment("pooling", quick=True, seeds=(0, 1, 2))  # doctest: +SKIP
      >>> print(res["table"])  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    exp = (
        load_experiment(experiment, quick=quick, recipe=recipe)
        if isinstance(experiment, str)
        else check_experiment(experiment if recipe is None else {**experiment, "recipe": recipe})
    )
    default_recipe = check_experiment({**exp, "recipe": None})["recipe"]
    if seeds is not None:
        exp = check_experiment({**exp, "seeds": tuple(seeds)})
    if arms is not None:
        unknown = [a for a in arms if a not in exp["arms"]]
        if unknown:
            raise ValueError(f"`arms` {unknown} not in the experiment's arms {list(exp['arms'])}.")
        exp = check_experiment({**exp, "arms": {a: exp["arms"][a] for a in arms}})
    overrides = dict(overrides or {})
    name = exp["name"] + ("_quick" if quick else "")
    if exp["recipe"] is not None and exp["recipe"] != default_recipe:
        name += f"_{exp['recipe']}"
    workdir = pathlib.Path(workdir or os.path.join("runs", "compare", name)).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    runs_path = workdir / RUNS_FILE
    previous = {} if fresh else _finished_runs(runs_path)
    # Records outside this plan (other seeds or arms) stay in runs.jsonl, not in the results:
    # running a part of an experiment never throws away another part already trained.
    planned = {(g, a, int(s)) for g in exp["groups"] for a in exp["arms"] for s in exp["seeds"]}
    set_aside = [r for key, r in previous.items() if key not in planned]
    runs_path.write_text("".join(json.dumps(r) + "\n" for r in set_aside))

    total, _ = _total_steps(exp, overrides)
    if progress and sys.stderr.isatty():
        bar: Any = tqdm(total=total, desc=name, unit="step", dynamic_ncols=True)
    else:
        bar = _NoBar()
    bar.write(
        f"convjax compare {name}: {len(exp['groups'])} group(s) x {len(exp['arms'])} arms x "
        f"{len(exp['seeds'])} seeds, {total} train steps; workdir {workdir}"
    )
    runs: list[dict[str, Any]] = []
    compilations: dict[str, int] = {}
    resumed: list[str] = []
    try:
        for group in exp["groups"]:
            for arm in exp["arms"]:
                program = None
                for seed in exp["seeds"]:
                    config = arm_config(exp, group, arm, seed, overrides)
                    fingerprint = spec_fingerprint(config)
                    record = previous.get((group, arm, int(seed)))
                    if record is not None and record.get("spec_fingerprint") == fingerprint:
                        runs.append(record)
                        resumed.append(f"{group}/{arm}/{seed}")
                        with runs_path.open("a", encoding="utf-8") as f:
                            f.write(json.dumps(record) + "\n")
                        bar.update(config.run.num_epochs * int(record["steps_per_epoch"]))
                        bar.write(f"  {group} / {arm} / seed {seed}: kept from {runs_path.name}")
                        continue
                    bar.set_description(f"{group} / {arm} / seed {seed}")
                    program, record = _run_seed(
                        config, program, bar=bar, record_kernel_sizes=bool(exp["kernel_sizes"])
                    )
                    record.update(
                        group=group,
                        arm=arm,
                        model=config.model.name,
                        dataset=config.data.name,
                        spec_fingerprint=fingerprint,
                    )
                    runs.append(record)
                    with runs_path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.write(
                        f"  {group} / {arm} / seed {seed}: test accuracy "
                        f"{record['test_accuracy'][-1]:.4f}, "
                        f"{np.mean(record['epoch_time_s']):.2f} s/epoch"
                    )
                if program is not None:
                    compilations[f"{group}/{arm}"] = len(program.traces)
    finally:
        bar.close()

    rows = summarize(runs)
    table = markdown_table(rows, switch=exp["switch"])

    sample = arm_config(exp, next(iter(exp["groups"])), next(iter(exp["arms"])), 0, overrides)
    results = {
        "experiment": {k: v for k, v in exp.items()},
        "quick": bool(quick),
        "recipe": exp["recipe"],
        "recipe_source": exp["recipes"][exp["recipe"]]["source"] if exp["recipe"] else "",
        "overrides": overrides,
        "dataset": sample.data.name,
        "num_epochs": {
            g: arm_config(exp, g, arm, 0, overrides).run.num_epochs for g in exp["groups"]
        },
        "rows": rows,
        "table": table,
        "compilations": compilations,
        "resumed": resumed,
        "workdir": str(workdir),
        "versions": versions(),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_time_s": time.perf_counter() - t_start,
    }
    (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=list) + "\n")
    header = (
        f"# {exp['title']}\n\n"
        f"`convjax compare {exp['name']}{' --quick' if quick else ''}`: dataset "
        f"`{sample.data.name}`, seeds {list(exp['seeds'])}, epochs {results['num_epochs']}, "
        f"{results['versions']['devices']['count']} x {results['versions']['devices']['kind']}"
        f", {results['written']}.\n\n"
    )
    if exp["recipe"] is not None:
        header += f"Recipe `{exp['recipe']}`: {results['recipe_source']}.\n\n"
    header += (
        "vs first arm: mean of the per-seed differences to the group's first arm, with its "
        "95 % Student-t confidence interval over the seeds (points).\n\n"
    )
    (workdir / TABLE_FILE).write_text(
        header + table + (f"\nPaper: {exp['paper']}\n" if exp["paper"] else "")
    )
    if plots:
        plot_curves(rows, str(workdir / CURVES_FILE), title=exp["title"])
        plot_kernel_sizes(runs, str(workdir / KERNEL_SIZES_FILE))
    results["runs"] = runs
    return results


# ------------------------------------------------------------------------------ command line
def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated ints, got {text!r}"
        ) from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"--seeds must name at least one seed, got {text!r}")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    """``convjax compare <experiment> [--quick] [...]``; ``python -m convjax.compare``."""
    parser = argparse.ArgumentParser(
        prog="convjax compare",
        description="Train arms that differ in one switch over seeds; write table.md, "
        "curves.png, results.json and runs.jsonl to the workdir. --config.<field>=<value> "
        "overrides a trainer config field of every run (e.g. --config.data.data_dir=DIR).",
    )
    parser.add_argument(
        "experiment", help=f"a shipped experiment {shipped_experiments()} or a config file"
    )
    parser.add_argument("--quick", action="store_true", help="the few-minute variant (digits)")
    parser.add_argument(
        "--recipe",
        default=None,
        help="training recipe: paper (default: the paper's own, as its code ran it) or adam",
    )
    parser.add_argument("--workdir", default=None, help="default runs/compare/<name>[_quick]")
    parser.add_argument("--seeds", type=_parse_seeds, default=None, help="e.g. 0,1,2")
    parser.add_argument("--arms", default=None, help="comma-separated subset of the arms")
    parser.add_argument("--dataset", default=None, help="e.g. tfds:cifar10, idx:<dir>, digits")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--num_epochs", type=int, default=None, help="epochs of every group")
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="train every seed again (default: keep the seeds of the workdir's runs.jsonl "
        "whose resolved spec is unchanged, so an interrupted experiment resumes)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    pairs = [a[len("--config.") :].partition("=")[::2] for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    try:
        overrides: dict[str, Any] = parse_overrides(pairs)
    except ConfigError as err:
        print(f"convjax compare: error: {err}", file=sys.stderr, flush=True)
        return 2
    if args.dataset:
        overrides["dataset"] = args.dataset
    if args.data_dir:
        overrides["data"] = {**overrides.get("data", {}), "data_dir": args.data_dir}
    if args.num_epochs is not None:
        overrides["num_epochs"] = args.num_epochs
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.dtype:
        overrides["dtype"] = args.dtype
    try:
        results = run_experiment(
            args.experiment,
            args.workdir,
            quick=args.quick,
            overrides=overrides,
            seeds=args.seeds,
            arms=args.arms.split(",") if args.arms else None,
            recipe=args.recipe,
            progress=not args.no_progress,
            fresh=args.fresh,
        )
    except (
        ValueError,
        TypeError,
        ConfigError,
        ConfigFileError,
        DataError,
        FileNotFoundError,
    ) as err:
        hint = ""
        if "fashion-mnist" in str(err) and not os.path.isdir("/usr/share/datasets/fashion-mnist"):
            hint = (
                " (install the IDX files with `sudo apt-get install dataset-fashion-mnist`, "
                "or use --quick / --dataset=<spec>)"
            )
        print(f"convjax compare: error: {err}{hint}", file=sys.stderr, flush=True)
        return 1 if isinstance(err, (DataError, FileNotFoundError)) else 2
    print(results["table"], flush=True)
    print(
        f"convjax compare: wrote {TABLE_FILE}, {CURVES_FILE}, {RESULTS_FILE}, {RUNS_FILE} to "
        f"{results['workdir']} in {results['wall_time_s']:.0f} s; compilations per arm: "
        f"{results['compilations']}",
        flush=True,
    )
    return 0


__all__ = [
    "ArmProgram",
    "arm_config",
    "check_experiment",
    "flex_kernel_sizes",
    "load_experiment",
    "load_results",
    "main",
    "markdown_table",
    "paired_difference",
    "plot_curves",
    "plot_differences",
    "plot_kernel_sizes",
    "run_experiment",
    "shipped_experiments",
    "student_t_quantile",
    "summarize",
]

if __name__ == "__main__":
    sys.exit(main())
