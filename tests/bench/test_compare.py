"""``convjax compare``: a tiny experiment end to end (2 arms x 2 seeds x 1 epoch of digits),
its statistics recomputed from the per-seed records, one compilation per arm, and the
reused step giving the same run as a freshly compiled one."""

import json
import pathlib
import types

import numpy as np
import pytest

from convjax.compare import runner as compare

TINY = {
    "name": "tiny",
    "title": "tiny pooling",
    "switch": "pool",
    "base": {
        "dataset": "digits",
        "batch_size": 64,
        "num_epochs": 1,
        "model": "digits_cnn",
        "model_kwargs": {"widths": (8, 16)},
        "optimizer": {"warmup_steps": 5},
    },
    "arms": {"max": {"pool": "max"}, "avg": {"pool": "avg"}},
    "seeds": (0, 1),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("compare")
    results = compare.run_experiment(TINY, workdir, progress=False)
    return results, workdir


def test_writes_table_plot_and_records(tiny):
    results, workdir = tiny
    table = (workdir / "table.md").read_text()
    assert table.startswith("# tiny pooling")
    assert "| all | max |" in table and "| all | avg |" in table
    png = (workdir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    runs = [json.loads(line) for line in (workdir / "runs.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["seed"]) for r in runs] == [("max", 0), ("max", 1), ("avg", 0), ("avg", 1)]
    for r in runs:
        assert len(r["test_accuracy"]) == len(r["epoch_time_s"]) == 1
        assert 0.0 <= r["test_accuracy"][0] <= 1.0 and r["epoch_time_s"][0] > 0
        assert len(r["epoch_cpu_s"]) == 1 and r["epoch_cpu_s"][0] > 0
        assert r["test_examples"] == 360 and r["num_params"] > 0
    # Seeds change the run (init and data order), not just its label.
    assert runs[0]["test_loss"] != runs[1]["test_loss"]
    assert compare.load_results(workdir)["rows"] == results["rows"]


def test_statistics_come_from_the_per_seed_results(tiny):
    results, workdir = tiny
    runs = compare.load_results(workdir)["runs"]
    for row in results["rows"]:
        accs = [r["test_accuracy"][-1] for r in runs if r["arm"] == row["arm"]]
        times = [r["epoch_time_s"][0] for r in runs if r["arm"] == row["arm"]]
        assert row["accuracies"] == accs
        assert row["accuracy_mean"] == pytest.approx(sum(accs) / 2)
        assert row["accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / np.sqrt(2))
        assert row["epoch_time_s"] == pytest.approx(sum(times) / 2)
        cpu = [r["epoch_cpu_s"][0] for r in runs if r["arm"] == row["arm"]]
        assert row["epoch_cpu_s"] == pytest.approx(sum(cpu) / 2)
        assert f"{row['epoch_time_s']:.2f} ({row['epoch_cpu_s']:.2f})" in results["table"]
        cell = f"{100 * row['accuracy_mean']:.2f} ± {100 * row['accuracy_std']:.2f}"
        assert cell in results["table"]


def test_one_compilation_per_arm_and_reuse_changes_nothing(tiny):
    results, _ = tiny
    assert results["compilations"] == {"all/max": 1, "all/avg": 1}
    # Seed 1 of "avg" with a freshly compiled step equals the run that reused seed 0's step.
    config = compare.arm_config(compare.check_experiment(TINY), "all", "avg", 1)
    program, fresh = compare._run_seed(
        config, None, bar=compare._NoBar(), record_kernel_sizes=False
    )
    reused = results["runs"][3]
    assert (reused["arm"], reused["seed"]) == ("avg", 1)
    np.testing.assert_allclose(fresh["test_loss"], reused["test_loss"], rtol=1e-5)
    np.testing.assert_allclose(fresh["test_accuracy"], reused["test_accuracy"], atol=1e-9)


def test_an_interrupted_experiment_resumes_from_its_records(tiny, tmp_path):
    """Seeds in runs.jsonl with the same resolved spec are kept; a seed whose spec changed (here
    its fingerprint) and a torn last line (a kill mid-write) train again; --fresh keeps none."""
    results, workdir = tiny
    lines = (workdir / "runs.jsonl").read_text().splitlines()
    changed = json.loads(lines[3])
    changed["spec_fingerprint"] = "0" * 16
    (tmp_path / "runs.jsonl").write_text("\n".join(lines[:3] + [json.dumps(changed), '{"gro']))
    again = compare.run_experiment(TINY, tmp_path, progress=False, plots=False)
    assert again["resumed"] == ["all/max/0", "all/max/1", "all/avg/0"]
    assert again["compilations"] == {"all/avg": 1}
    assert again["rows"][0] == results["rows"][0]
    retrained = again["runs"][3]
    assert retrained["spec_fingerprint"] == results["runs"][3]["spec_fingerprint"] != "0" * 16
    np.testing.assert_allclose(retrained["test_loss"], results["runs"][3]["test_loss"], rtol=1e-5)
    kept = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["seed"]) for r in kept] == [("max", 0), ("max", 1), ("avg", 0), ("avg", 1)]
    # Another seed set or arm subset is another plan: only its records make the results, and
    # the others stay in runs.jsonl, so the whole experiment afterwards trains nothing again.
    sub = compare.run_experiment(TINY, tmp_path, progress=False, plots=False, seeds=(1,))
    assert sub["resumed"] == ["all/max/1", "all/avg/1"] and sub["compilations"] == {}
    assert [r["seed"] for r in sub["runs"]] == [1, 1] and len(sub["rows"][0]["seeds"]) == 1
    on_disk = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["seed"]) for r in on_disk) == [
        ("avg", 0), ("avg", 1), ("max", 0), ("max", 1)
    ]  # fmt: skip
    whole = compare.run_experiment(TINY, tmp_path, progress=False, plots=False)
    assert len(whole["resumed"]) == 4 and whole["compilations"] == {}
    assert whole["rows"] == again["rows"]
    assert compare.main([str(tmp_path / "nope.py"), "--fresh"]) == 2


def test_summarize_and_table_on_hand_made_records():
    runs = [
        {"group": "g", "arm": a, "seed": s, "test_accuracy": [0.5, acc],
         "epoch_time_s": [t, t], "num_params": 7}
        for a, s, acc, t in [("x", 0, 0.9, 1.0), ("x", 1, 0.8, 3.0), ("y", 0, 0.95, 2.0),
                             ("y", 1, 0.95, 2.0)]
    ]  # fmt: skip
    x, y = compare.summarize(runs)
    assert x["accuracy_mean"] == pytest.approx(0.85) and y["accuracy_std"] == 0.0
    assert x["accuracy_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert x["curve_mean"] == pytest.approx([0.5, 0.85]) and x["epoch_time_s"] == 2.0
    # paired per seed: y - x = 0.05, 0.15 -> mean 0.10 +- t(0.975, 1) 0.0707 / sqrt(2)
    half = 12.7062047 * np.std([0.05, 0.15], ddof=1) / np.sqrt(2)
    assert y["difference"]["mean"] == pytest.approx(0.10)
    assert y["difference"]["low"] == pytest.approx(0.10 - half, rel=1e-6)
    assert x["difference"] is None
    table = compare.markdown_table([x, y], switch="pool")
    cell = f"+10.00 [{100 * (0.1 - half):+.2f}, {100 * (0.1 + half):+.2f}]"
    assert f"| g | y | 95.00 ± 0.00 | {cell} | 95.0, 95.0 | 2.00 | 7 |" in table


def test_plot_differences_puts_both_recipes_of_an_experiment_in_one_panel(tiny, tmp_path):
    """One panel per experiment; each recipe's paired mean and 95 % interval drawn where the
    records put them; the reference arm named on every row."""
    results, workdir = tiny
    runs = [
        {"group": "g", "arm": a, "seed": s, "test_accuracy": [acc], "epoch_time_s": [1.0],
         "num_params": 7}
        for a, s, acc in [("x", 0, 0.9), ("x", 1, 0.8), ("y", 0, 0.95), ("y", 1, 0.95)]
    ]  # fmt: skip
    other = {"experiment": {"name": "other"}, "quick": True, "recipe": "paper",
             "rows": compare.summarize(runs)}  # fmt: skip
    adam = dict(results, recipe="adam")
    path = tmp_path / "differences.png"
    fig = compare.plot_differences([workdir, adam, other], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tiny_ax, other_ax = fig.axes
    assert tiny_ax.get_title() == "tiny" and other_ax.get_title() == "other --quick"
    assert [t.get_text() for t in tiny_ax.get_yticklabels()] == ["all: avg - max"]
    assert [t.get_text() for t in other_ax.get_yticklabels()] == ["g: y - x"]
    diff = results["rows"][1]["difference"]
    for container in tiny_ax.containers:  # one errorbar per recipe, same records
        (x,), _ = container.lines[0].get_data()
        assert x == pytest.approx(100 * diff["mean"])
        segments = container.lines[2][0].get_segments()
        assert [p[0] for p in segments[0]] == pytest.approx([100 * diff["low"], 100 * diff["high"]])
    assert sorted(c.get_label() for c in tiny_ax.containers) == ["recipe adam", "recipe paper"]
    one_seed = dict(other, rows=compare.summarize([r for r in runs if r["seed"] == 0]))
    (ax,) = compare.plot_differences([one_seed]).axes  # one seed: a point, no interval
    assert ax.containers[0].lines[0].get_data()[0][0] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="workdirs"):
        compare.plot_differences([dict(other, rows=other["rows"][:1])])
    # The command line over workdirs: a figure, or a named error and exit status 2.
    from convjax.compare import differences

    out = tmp_path / "cli.png"
    assert differences.main([f"--out={out}", str(workdir), str(workdir)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert differences.main([f"--out={out}", str(tmp_path / "nope")]) == 2


def test_flex_kernel_sizes_match_the_mask_formula():
    """Crop size 2 floor((|mu| + sigma sqrt(-2 ln T)) / h) + 1 (h = 2 / (horizon - 1)) per
    FlexConv layer; the paper's initialisation (sigma 0.075, horizon 33) gives 5x5."""
    from flax import nnx

    from convjax.nnx import FlexConv
    from convjax.train.state import split_model

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = FlexConv(1, 2, 33, num_spatial_dims=2, hidden_features=4, rngs=rngs)
            self.b = FlexConv(2, 2, 33, num_spatial_dims=2, hidden_features=4,
                              mask_init_sigma=0.3, rngs=rngs)  # fmt: skip
            self.c = nnx.Conv(2, 2, (3, 3), rngs=rngs)  # not a FlexConv: no entry

    model_def, params, pad_params, stats, _ = split_model(Net(nnx.Rngs(0)))
    state = types.SimpleNamespace(params=params, pad_params=pad_params, stats=stats)
    sizes = compare.flex_kernel_sizes(model_def, state)
    radius = np.sqrt(-2 * np.log(0.1))
    expected = [2 * np.floor(s * radius / (2 / 32)) + 1 for s in (0.075, 0.3)]
    assert expected[0] == 5
    assert sizes == {"a": expected[0], "b": expected[1]}
    extent = compare.flex_kernel_sizes(model_def, state, continuous=True)
    assert extent == pytest.approx({"a": 0.075 * radius * 16 * 2 + 1, "b": 0.3 * radius * 32 + 1})


@pytest.mark.parametrize("name", ["padding", "pooling", "norm", "conv"])
def test_shipped_experiments_resolve(name):
    for quick in (True, False):
        exp = compare.load_experiment(name, quick=quick)
        assert len(exp["seeds"]) >= 3 and len(exp["arms"]) >= 2
        for group in exp["groups"]:
            for arm in exp["arms"]:
                spec = compare.arm_config(exp, group, arm, 0)
                assert spec.data.name == ("digits" if quick else
                                          "idx:/usr/share/datasets/fashion-mnist")  # fmt: skip
                assert spec.to_config()[exp["switch"]] == exp["arms"][arm][exp["switch"]]


def test_student_t_and_paired_interval_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 4, 5, 9, 30):
        for p in (0.9, 0.975, 0.995):
            assert compare.student_t_quantile(p, dof) == pytest.approx(
                stats.t.ppf(p, dof), rel=1e-9
            )
    a = [0.912, 0.905, 0.921, 0.899, 0.915]
    b = [0.901, 0.899, 0.907, 0.902, 0.903]
    d = compare.paired_difference(a, b)
    diff = np.subtract(a, b)
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    assert d["mean"] == pytest.approx(diff.mean()) and d["n"] == 5
    assert (d["low"], d["high"]) == pytest.approx((low, high), rel=1e-9)
    # the interval excludes 0 exactly when the paired t-test rejects at 5 %
    assert (d["low"] > 0) == (stats.ttest_rel(a, b).pvalue < 0.05)
    assert compare.paired_difference([0.5], [0.4])["low"] is None
    with pytest.raises(ValueError, match="equally long"):
        compare.paired_difference([0.5, 0.6], [0.4])
    with pytest.raises(ValueError, match="dof"):
        compare.student_t_quantile(0.975, 0)


def test_recipes_paper_by_default_adam_on_request():
    norm = compare.load_experiment("norm")
    assert norm["recipe"] == "paper" and set(norm["recipes"]) == {"paper", "adam"}
    cfg = compare.arm_config(norm, "1 epoch", "deconv", 0)
    opt = cfg.optimizer
    assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay) == ("sgd", 0.1, 0.9, 1e-3)
    assert (opt.weight_decay_on, opt.schedule, opt.warmup_steps) == ("all", "cosine", 0)
    assert cfg.run.batch_size == 128 and cfg.model.norm == "deconv"
    adam = compare.arm_config(compare.load_experiment("norm", recipe="adam"), "1 epoch", "batch", 0)
    assert (adam.optimizer.name, adam.optimizer.learning_rate) == ("adam", 3e-3)
    pool = compare.arm_config(compare.load_experiment("pooling"), "VGG-style", "soft", 0)
    assert (pool.optimizer.schedule, pool.optimizer.weight_decay) == ("step", 1e-4)
    conv = compare.arm_config(
        compare.load_experiment("conv", quick=True), "FlexNet-tiny", "flex", 0
    )
    assert (conv.optimizer.learning_rate, conv.optimizer.mask_lr_factor) == (0.01, 0.1)
    assert conv.model.kwargs["dropout"] == 0.2 and conv.run.aliasing_weight == 0.0
    assert conv.run.batch_size == 64 and conv.model.kwargs["flex_kernel_size"] == 17
    with pytest.raises(ValueError, match="not one of the experiment's recipes"):
        compare.load_experiment("norm", recipe="lamb")
    for name in ("cifar10_norm", "cifar10_pooling", "cifar10_padding", "cifar10_conv"):
        exp = compare.load_experiment(name)
        assert compare.arm_config(exp, next(iter(exp["groups"])), next(iter(exp["arms"])), 0)
        with pytest.raises(ValueError, match="no --quick variant"):
            compare.load_experiment(name, quick=True)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="shipped experiments are"):
        compare.load_experiment("nope")
    with pytest.raises(ValueError, match=r"experiment\['arms'\]"):
        compare.check_experiment({**TINY, "arms": {"max": {"pool": "max"}}})
    with pytest.raises(ValueError, match=r"experiment\['seeds'\]"):
        compare.check_experiment({**TINY, "seeds": (0, 0)})
    with pytest.raises(ValueError, match=r"num_epochs"):
        compare.check_experiment({**TINY, "base": {"num_epochs": 0}})
    with pytest.raises(ValueError, match="not in the experiment's arms"):
        compare.run_experiment(TINY, arms=["soft"], progress=False)
    with pytest.raises(TypeError, match="`experiment` must be a mapping"):
        compare.check_experiment([1])
    assert compare.main(["nope", "--no_progress"]) == 2
    from convjax.__main__ import main as convjax_main

    assert convjax_main(["convjax", "compare", "nope", "--no_progress"]) == 2


def test_compare_notebook_draws_a_workdir(tiny, monkeypatch):
    """notebooks/compare.ipynb loads the tiny run's workdir and draws its table and curves."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _, workdir = tiny
    path = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "compare.ipynb"
    monkeypatch.setenv("CONVJAX_COMPARE_WORKDIR", str(workdir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{workdir.name}: 4 runs, dataset digits" in text
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| all | max |" in markdown and "| all | avg |" in markdown
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # mean and per-seed


def test_one_progress_bar_counts_every_step_of_the_experiment():
    total, _ = compare._total_steps(compare.check_experiment(TINY), {})
    assert total == 2 * 2 * 22  # arms x seeds x (1437 digits // 64 per epoch) x 1 epoch
    exp = compare.load_experiment("norm", quick=True)  # groups of 1 and 6 epochs, 5 seeds
    total, _ = compare._total_steps(exp, {})
    assert total == (1 + 6) * (1437 // 128) * 2 * 5  # the paper recipe's batch of 128
