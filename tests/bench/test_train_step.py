"""The model-level train-step benchmark: its main path on a tiny config, and its HLO parsing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from convjax.bench import train_step as bench
from convjax.configs.default import base_config
from convjax.train.factory import make_train_setup
from convjax.train.state import split_model
from tests.train.common import tiny_model

TINY = ["--models", "digits_cnn", "--size", "8", "--in-channels", "1", "--batch", "4"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One run of the benchmark's main path: digits_cnn, zero vs reflect padding, 1 step."""
    out = tmp_path_factory.mktemp("bench") / "train_step.json"
    lines: list[str] = []
    argv = TINY + ["--steps", "1", "--warmup", "1", "--switches", "padding=zero,reflect"]
    argv += ["--no-warm-compile"]  # the discarded warm-up compile is the same call again
    args = bench.parse_args(argv + ["--out", str(out)])
    result = bench.run(args, "test", log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    return result, out, "\n".join(lines)


def test_report_structure(report):
    result, out, printed = report
    (model,) = result["models"]
    assert model["model"] == "digits_cnn" and model["batch"] == 4
    names = [v["name"] for v in model["variants"]]
    assert names == ["baseline", "padding=reflect"]
    base, reflect = model["variants"]
    assert base["status"] == reflect["status"] == "ok"
    assert base["ratio"] == base["step_cpu_ratio"] == 1.0
    assert base["compile_ratio"] == base["compile_cpu_ratio"] == 1.0
    for v in (base, reflect):
        assert v["ratio"] > 0 and v["step_s"] > 0 and v["step_cpu_s"] > 0
        assert v["images_per_s"] == pytest.approx(4 / v["step_s"])
        assert v["trace_s"] > 0 and v["lower_s"] > 0 and v["compile_s"] > 0
        assert np.isfinite(v["loss"])
        # digits_cnn has 4 convs; forward + input and kernel gradients (none for the input
        # of the first conv) = 4 + 3 + 4 = 11 before XLA.
        assert len(v["convs_before_xla"]) == 11
    # Same number of parameters: reflect padding adds none.
    assert base["num_params"] == reflect["num_params"] == 65_834
    # Reflect padding is explicit: its convs see pre-padded 10x10 inputs, the baseline's not.
    assert any("f32[4,10,10,1] * " in c for c in reflect["convs_before_xla"])
    assert not any("f32[4,10,10,1] * " in c for c in base["convs_before_xla"])
    on_disk = json.loads(out.read_text())
    assert on_disk["models"][0]["variants"][0]["ratio"] == 1.0
    assert "jax" in on_disk["environment"] and "load average" in on_disk["environment"]
    assert "padding=reflect" in printed and "baseline convolutions before XLA (11)" in printed
    markdown = bench.format_markdown(result)
    assert "| baseline | 1.00x / 1.00x | 1.00x / 1.00x |" in markdown


def test_switch_parsing_and_variants():
    assert bench.parse_switches(["norm=batch,deconv", "pool=soft"]) == {
        "norm": ("batch", "deconv"),
        "pool": ("soft",),
    }
    for bad in (["norm=bn"], ["size=3"], ["padding"]):
        with pytest.raises(ValueError, match="--switches"):
            bench.parse_switches(bad)
    one_at_a_time = bench.variant_list({"padding": ("zero", "learned"), "norm": ("deconv",)})
    assert [bench.variant_name(v) for v in one_at_a_time] == [
        "baseline",
        "padding=learned",
        "norm=deconv",
    ]
    grid = bench.variant_list(
        {"padding": ("zero", "partial"), "norm": ("batch", "deconv")}, grid=True
    )
    assert [bench.variant_name(v) for v in grid] == [
        "baseline",
        "norm=deconv",
        "padding=partial",
        "padding=partial+norm=deconv",
    ]
    # The default sweep: every value of every switch once, the baseline first.
    default = bench.variant_list(bench.SWITCHES)
    assert default[0] == bench.BASELINE and len(default) == 1 + 5 + 2 + 2 + 1
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "no_such_model"])


def test_rejected_combination_is_skipped_with_reason():
    rs = np.random.RandomState(0)
    batch = {"image": rs.randn(2, 8, 8, 1).astype(np.float32), "label": np.zeros(2, np.int32)}
    res = bench.prepare_variant(
        "digits_cnn",
        {**bench.BASELINE, "padding": "partial", "norm": "deconv"},
        batch=batch,
        num_classes=10,
        dtype="float32",
        model_kwargs={},
        parallel="shard_map",
    )
    assert res["status"] == "skipped" and "norm='deconv'" in res["reason"]


def test_hlo_convolutions_before_and_after_xla():
    """Two convs of known shapes (and a grouped one) found with their operand shapes."""

    def f(x, k1, k2):
        y = lax.conv_general_dilated(
            x, k1, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return lax.conv_general_dilated(
            y,
            k2,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=4,
        )

    args = (jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 8)), jnp.ones((1, 1, 2, 4)))
    lowered = jax.jit(f).lower(*args)
    for text in (lowered.as_text(dialect="hlo"), lowered.compile().as_text()):
        convs = bench.hlo_convolutions(text)
        sigs = sorted(bench.conv_signature(c) for c in convs)
        assert len(convs) == 2, sigs
        assert sigs[0].startswith("f32[2,4,4,8] * f32[1,1,2,4] -> f32[2,4,4,4]")
        assert "groups=4" in sigs[0]
        assert sigs[1].startswith("f32[2,8,8,3] * f32[3,3,3,8] -> f32[2,4,4,8]")
        assert "stride=2x2" in sigs[1] and "pad=1_1x1_1" in sigs[1]
    # A library call naming a convolution (as cuDNN's on GPU) counts, with a tuple result.
    gpu_like = (
        "  %p0 = f32[2,8,8,3]{3,2,1,0} parameter(0)\n"
        "  %p1 = f32[3,3,3,8]{3,2,1,0} parameter(1)\n"
        "  %cc = (f32[2,8,8,8]{3,2,1,0}, u8[0]{0}) custom-call(%p0, %p1), window={size=3x3 "
        'pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward"\n'
    )
    (conv,) = bench.hlo_convolutions(gpu_like)
    assert conv["op"] == "__cudnn$convForward"
    assert (conv["lhs"], conv["rhs"], conv["out"]) == (
        "f32[2,8,8,3]",
        "f32[3,3,3,8]",
        "f32[2,8,8,8]",
    )


def test_program_fingerprint_tells_same_from_different():
    x = jnp.ones((4, 4))
    text = lambda fn: jax.jit(fn).lower(x).as_text(dialect="hlo")  # noqa: E731

    def double(v):
        return v * 2

    def twice(v):
        return v * 2

    same = bench._program_fingerprint(text(double)) == bench._program_fingerprint(text(twice))
    assert same
    assert bench._program_fingerprint(text(double)) != bench._program_fingerprint(
        text(lambda v: v * 3)
    )


def test_make_train_setup_matches_hand_built_state():
    """The factory builds the trainer's state: same parameters as building the model by hand."""
    config = base_config()
    config.padding = "learned"
    config.model_kwargs.widths = (4,)
    setup = make_train_setup(config, num_classes=10, in_features=1, num_steps=10)
    _, params, pad_params, stats, _ = split_model(tiny_model(padding="learned", seed=0))
    same = jax.tree.map(np.array_equal, setup.state.params, params)
    assert all(jax.tree.leaves(same))
    assert jax.tree.structure(setup.state.pad_params) == jax.tree.structure(pad_params)
    assert setup.num_padding_params > 0 and int(setup.state.step) == 0
    with pytest.raises(ValueError, match="num_steps"):
        make_train_setup(config, num_classes=10, in_features=1, num_steps=0)


def test_time_interleaved_runs_round_robin():
    from convjax.bench.timing import time_interleaved

    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n) or jnp.zeros(())) for name in ("a", "b")}
    cpu: dict = {}
    times = time_interleaved(calls, warmup=2, repeats=3, cpu_times=cpu)
    assert order == ["a", "b"] * 5  # 2 warm-up rounds, then 3 timed rounds, interleaved
    assert {k: len(v) for k, v in times.items()} == {k: len(v) for k, v in cpu.items()}
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in (*times.values(), *cpu.values()) for t in v)
    with pytest.raises(ValueError, match="warmup"):
        time_interleaved(calls, warmup=0)


def test_side_by_side_zoo_model_and_converted_plain_twin(tmp_path):
    """The plain twin of digits_cnn, converted by the trainer with the same switches, compiles
    to the same convolutions and flop count as the zoo model: the same architecture."""
    plain = "convjax.bench.plain_models:digits_cnn"
    argv = TINY[2:] + ["--models", f"digits_cnn,{plain}", "--side-by-side", "--steps", "1"]
    argv += ["--warmup", "1", "--switches", "padding=learned", "pool=soft", "norm=deconv"]
    argv += ["--grid", "--out", str(tmp_path / "r.md")]
    lines: list[str] = []
    report = bench.run(bench.parse_args(argv), "test", log=lambda *a, **k: lines.append(str(a)))
    rows = report["side_by_side"]
    assert [r["name"] for r in rows] == ["baseline", "padding=learned+pool=soft+norm=deconv"]
    for row in rows:
        zoo, converted = row["models"]
        assert zoo["status"] == converted["status"] == "ok"
        assert zoo["ratio"] == 1.0 and converted["ratio"] > 0
        assert sorted(zoo["convs_before_xla"]) == sorted(converted["convs_before_xla"])
        assert zoo["flops"] == pytest.approx(converted["flops"], rel=1e-6)
        assert zoo["num_params"] == converted["num_params"]
        assert zoo["num_padding_params"] == converted["num_padding_params"]
    assert plain in (tmp_path / "r.md").read_text()


def test_import_path_models_are_checked():
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "no_such_module_i20:f"])
    args = bench.parse_args(["--models", "convjax.bench.plain_models:digits_cnn"])
    assert args.models == ["convjax.bench.plain_models:digits_cnn"]
