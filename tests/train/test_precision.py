"""Reduced precision: one train and one eval step of every model and switch value in bfloat16
and float16 give finite logits, losses and gradients; the XLA:CPU bfloat16 workaround."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.train.config import resolve_config
from convjax.train.distributed import CPU_BF16_WORKAROUND, xla_compiler_options
from convjax.train.loop import build_model, make_optimizers
from convjax.train.state import create_train_state, split_model
from convjax.train.step import make_eval_step, make_train_step

DTYPES = ["bfloat16", "float16"]


def _one_train_and_eval_step(name, dtype, shape, num_classes=10, **switches):
    """Build ``name`` with the trainer's own helpers; jit one train step, then one eval step
    plus the eval-mode logits (two compilations, as the trainer compiles them); return host
    results ``(new_state, train_metrics, eval_sums, logits)``."""
    model_kwargs = switches.pop("model_kwargs", {})
    config = resolve_config(
        {"model": name, "dtype": dtype, "model_kwargs": model_kwargs, "num_steps": 2, **switches}
    )
    model = build_model(config, num_classes=num_classes, in_features=shape[-1], axis_name=None)
    model_def, params, pad_params, stats, param_state = split_model(model)
    tx, schedule, tx_pad = make_optimizers(config, param_state, 2)
    state = create_train_state(params, pad_params, stats, tx, tx_pad, 0)
    compute = getattr(jnp, dtype)
    train_step = make_train_step(
        model_def, tx, tx_pad, schedule=schedule, axis_name=None, compute_dtype=compute
    )
    eval_step = make_eval_step(model_def, axis_name=None, compute_dtype=compute)

    def evaluate(state, batch):
        model = model_def.merge(state.params, state.pad_params, state.stats, train=False)
        return eval_step(state, batch), model(batch["image"].astype(compute))

    rs = np.random.RandomState(0)
    batch = {
        "image": jnp.asarray(rs.randn(*shape), jnp.float32),
        "label": jnp.asarray(rs.randint(0, num_classes, shape[0]), jnp.int32),
    }
    options = xla_compiler_options(compute) or None
    new_state, metrics = jax.jit(train_step, compiler_options=options)(state, batch)
    sums, logits = jax.jit(evaluate, compiler_options=options)(new_state, batch)
    return jax.device_get((new_state, metrics, sums, logits))


def _check_finite(out, num_classes=10, batch=2):
    new_state, metrics, sums, logits = out
    assert logits.shape == (batch, num_classes)
    assert np.isfinite(np.asarray(logits, np.float32)).all(), "eval logits"
    for key in ("loss", "total_loss", "grad_norm"):
        assert np.isfinite(metrics[key]), key
    assert float(metrics["grad_norm"]) > 0.0
    assert np.isfinite(sums["loss_sum"]) and float(sums["count"]) == batch
    for leaf in jax.tree.leaves((new_state.params, new_state.pad_params, new_state.stats)):
        assert np.isfinite(np.asarray(leaf, np.float32)).all(), "updated state"


# Every value of every switch, on one-stage digits_cnn, in six combined cases (one
# compilation each): padding zero F, reflect A, replicate B, circular C, partial D, learned E;
# pool avg A/F, soft B/E, max C/D; norm none A/E, batch B/D/F, deconv C; conv flex F.
SWITCHES = [
    {"padding": "reflect", "pool": "avg", "norm": "none"},
    {"padding": "replicate", "pool": "soft", "norm": "batch"},
    {"padding": "circular", "pool": "max", "norm": "deconv"},
    {"padding": "partial", "pool": "max", "norm": "batch"},
    {"padding": "learned", "pool": "soft", "norm": "none"},
    {"padding": "zero", "pool": "avg", "norm": "batch", "conv": "flex"},
]


def _switch_id(switch):
    return "-".join(str(v) for v in switch.values())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("switch", SWITCHES, ids=_switch_id)
def test_every_switch_value_is_finite_in_low_precision(switch, dtype):
    # Width 32: the size at which the XLA:CPU bfloat16 fusion bug shows (see below).
    kwargs = {"widths": (32,), "dropout": 0.1}
    if switch.get("conv") == "flex":
        kwargs["flex_kernel_size"] = 5
    out = _one_train_and_eval_step("digits_cnn", dtype, (2, 8, 8, 1), model_kwargs=kwargs, **switch)
    _check_finite(out)


def test_switch_cases_cover_every_value():
    from convjax.models.blocks import CONV_TYPES, NORM_TYPES, PADDING_MODES, POOL_TYPES

    for key, values in (
        ("padding", PADDING_MODES),
        ("pool", POOL_TYPES),
        ("norm", NORM_TYPES),
        ("conv", CONV_TYPES),
    ):
        seen = {case.get(key, "standard" if key == "conv" else None) for case in SWITCHES}
        assert set(values) <= seen, key


# Every model at its smallest sizes (the switches are covered above; these are slow).
MODELS = [
    ("digits_cnn", {}, (2, 8, 8, 1)),
    ("resnet20", {"widths": (4, 4, 4)}, (2, 8, 8, 3)),
    ("resnet56", {"widths": (4, 4, 4)}, (2, 8, 8, 3)),
    ("resnet18", {"width_multiplier": 1 / 16, "stem": "cifar"}, (2, 8, 8, 3)),
    ("resnet50", {"width_multiplier": 1 / 16, "stem": "cifar"}, (2, 8, 8, 3)),
    ("vgg11", {"width_multiplier": 1 / 16}, (2, 32, 32, 3)),
    ("vgg16", {"width_multiplier": 1 / 16}, (2, 32, 32, 3)),
    ("flexnet_tiny", {"flex_kernel_size": 5, "widths": (4, 4)}, (2, 8, 8, 1)),
    ("flexnet7", {"flex_kernel_size": 5, "widths": (4,) * 7}, (2, 8, 8, 3)),
    ("flextcn", {"flex_kernel_size": 5, "widths": (4,)}, (2, 16, 1)),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs, shape", MODELS, ids=[m[0] for m in MODELS])
def test_every_model_is_finite_in_low_precision(name, kwargs, shape, dtype):
    _check_finite(_one_train_and_eval_step(name, dtype, shape, model_kwargs=kwargs))


def test_bfloat16_fusion_workaround_matches_eager():
    """The minimal XLA:CPU reproduction: dot -> relu -> dot -> relu -> max-reduce in
    bfloat16. With the workaround options the jitted result equals the eager one bit for bit
    (without them, jaxlib 0.12.0.1 on CPU returns NaN / 1e38 garbage)."""
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.rand(4, 8, 8, 32), jnp.bfloat16)
    w = jnp.asarray(rs.randn(32, 32) * 0.1, jnp.bfloat16)

    def f(x, w):
        return jnp.max(jax.nn.relu(jax.nn.relu(x @ w) @ w), axis=(1, 2))

    eager = np.asarray(f(x, w), np.float32)
    fixed = np.asarray(jax.jit(f, compiler_options=CPU_BF16_WORKAROUND)(x, w), np.float32)
    assert np.isfinite(eager).all()
    np.testing.assert_array_equal(fixed, eager)


@pytest.mark.parametrize("backend", ["pmap", "shard_map"])
def test_data_parallel_compile_passes_the_options(backend):
    """``DataParallel.compile(..., compiler_options=...)`` (pmap compiles lazily with them)."""
    from convjax.train.distributed import DataParallel

    rs = np.random.RandomState(0)
    x = np.asarray(rs.rand(8, 8, 8, 32), jnp.bfloat16)
    w = jnp.asarray(rs.randn(32, 32) * 0.1, jnp.bfloat16)

    def pool(w, x):
        return jnp.max(jax.nn.relu(jax.nn.relu(x @ w) @ w), axis=(1, 2))

    def f(w, batch):
        return jax.lax.all_gather(pool(w, batch["x"]), "batch", tiled=True)

    dp = DataParallel(backend)
    fn = dp.compile(f, compiler_options=CPU_BF16_WORKAROUND)
    for _ in range(2):  # the second call reuses the executable
        out = fn(dp.replicate(w), dp.shard_batch({"x": x}))
        got = np.asarray(out[0] if backend == "pmap" else out, np.float32)
        np.testing.assert_array_equal(got, np.asarray(pool(w, jnp.asarray(x)), np.float32))


def test_compiler_options_only_for_bfloat16_on_cpu():
    assert xla_compiler_options(jnp.bfloat16, "cpu") == CPU_BF16_WORKAROUND
    assert xla_compiler_options(jnp.float16, "cpu") == {}
    assert xla_compiler_options(None, "cpu") == {}
    assert xla_compiler_options(jnp.bfloat16, "gpu") == {}
