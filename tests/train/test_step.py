"""The per-device train step: pmap == shard_map == one device, two optimizers, RNG, switches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.train.distributed import DataParallel
from convjax.train.state import create_train_state, split_model
from convjax.train.step import make_eval_step, make_loss_fn, make_train_step, step_key
from tests.train.common import (
    MixedNet,
    fixed_batch,
    make_setup,
    max_abs_diff,
    run,
    tiny_model,
    trees_equal,
)

NUM_STEPS = 2


@pytest.fixture(scope="module")
def three_ways():
    """Two steps of the same model on the same global batches: pmap, shard_map, 1 device.

    Learned padding (PadParam + padding optimizer), BatchNorm and deconvolution statistics
    synced over "batch". Two different batches, so the second step sees updated params,
    statistics and momentum.
    """
    model = MixedNet()
    _, state, step, _ = make_setup(model)
    batches = [fixed_batch(16, seed=0), fixed_batch(16, seed=1)]
    out = {
        "pmap": run(DataParallel("pmap"), step, state, batches),
        "shard_map": run(DataParallel("shard_map"), step, state, batches),
        "single": run(DataParallel("pmap", devices=jax.devices()[:1]), step, state, batches),
    }
    return state, out


def test_eight_devices(num_devices):
    assert DataParallel("pmap").num_devices == num_devices == 8
    assert DataParallel("shard_map").num_devices == 8


def test_pmap_equals_shard_map(three_ways):
    _, out = three_ways
    (s_p, m_p), (s_s, m_s) = out["pmap"], out["shard_map"]
    # The same per-device function and the same collectives: equal up to the last bits
    # (usually bit-identical; a 1e-6 margin keeps the test robust to XLA scheduling).
    assert jax.tree.structure(s_p) == jax.tree.structure(s_s)
    assert max_abs_diff(s_p, s_s) <= 1e-6
    assert m_p == pytest.approx(m_s, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("field", ["params", "pad_params", "stats", "opt_task", "opt_pad"])
def test_data_parallel_equals_single_device(three_ways, field):
    init, out = three_ways
    multi = getattr(out["pmap"][0], field)
    single = getattr(out["single"][0], field)
    assert jax.tree.structure(multi) == jax.tree.structure(single)
    # fp32 re-association of sums over 8 shards vs 1: a few ulps after two steps.
    assert max_abs_diff(multi, single) < 2e-5
    # ... and the field really moved (so the comparison is not vacuous).
    if field != "opt_pad":
        assert max_abs_diff(getattr(init, field), single) > 1e-4


def test_state_contents(three_ways):
    init, out = three_ways
    state, metrics = out["pmap"]
    assert int(state.step) == NUM_STEPS
    assert jax.tree.leaves(state.pad_params), "learned padding must give PadParam leaves"
    assert set(state.stats["bn"]) == {"mean", "var"}  # BatchNorm running statistics
    assert {"mean", "deconv"} <= set(state.stats["deconv"])  # deconvolution statistics
    # Padding momentum buffers are non-zero: the padding optimizer was stepped.
    assert max_abs_diff(init.opt_pad, state.opt_pad) > 0
    m_single = out["single"][1]
    for key in ("loss", "accuracy", "padding_loss", "total_loss", "grad_norm", "learning_rate"):
        assert np.isfinite(metrics[key])
        assert metrics[key] == pytest.approx(m_single[key], rel=1e-5, abs=1e-6), key
    assert metrics["padding_loss"] > 0
    assert metrics["total_loss"] == pytest.approx(
        metrics["loss"] + metrics["padding_loss"] + metrics["aliasing_penalty"], rel=1e-6
    )


def test_cross_gradients_are_exact_zeros():
    """Task loss -> exact zeros on PadParam; padding loss -> exact zeros on Param."""
    model = tiny_model(padding="learned", axis_name=None)
    model_def, params, pad_params, stats, _ = split_model(model)
    batch = fixed_batch(4)
    loss_fn = make_loss_fn(model_def)
    key = jax.random.key(0)

    def part(name):
        return lambda p, pp: loss_fn(p, pp, stats, batch, key)[1][1][name]

    g_task, g_pad = jax.jit(
        lambda p, pp: (
            jax.grad(part("loss"), argnums=(0, 1))(p, pp),
            jax.grad(part("padding_loss"), argnums=(0, 1))(p, pp),
        )
    )(params, pad_params)
    leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]
    assert all(np.all(g == 0) for g in leaves(g_task[1]))  # task -> PadParam
    assert all(np.all(g == 0) for g in leaves(g_pad[0]))  # padding -> Param
    assert any(np.any(g != 0) for g in leaves(g_task[0]))
    assert any(np.any(g != 0) for g in leaves(g_pad[1]))


def test_each_optimizer_changes_only_its_variables():
    """One step with (task lr, padding lr) in {(.1, .1), (.1, 0), (0, .1)}, bit-exact.

    The learning rates are injected hyperparameters (state, not constants): one compile.
    """
    model_def, params, pad_params, stats, _ = split_model(tiny_model(padding="learned"))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    tx_pad = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    init = create_train_state(params, pad_params, stats, tx, tx_pad, seed=0)
    dp = DataParallel("pmap")
    fn = dp.compile(make_train_step(model_def, tx, tx_pad))
    batch = dp.shard_batch(fixed_batch(16))
    out = {}
    for lr_task, lr_pad in [(0.1, 0.1), (0.1, 0.0), (0.0, 0.1)]:
        state = init.replace(
            opt_task=_with_lr(init.opt_task, lr_task), opt_pad=_with_lr(init.opt_pad, lr_pad)
        )
        out[lr_task, lr_pad] = dp.unreplicate(fn(dp.replicate(state), batch)[0])
    both, task_only, pad_only = out[0.1, 0.1], out[0.1, 0.0], out[0.0, 0.1]
    # The padding optimizer never touches Params; the task optimizer never touches PadParams.
    assert trees_equal(both.params, task_only.params)
    assert trees_equal(both.pad_params, pad_only.pad_params)
    assert trees_equal(task_only.pad_params, init.pad_params)
    assert trees_equal(pad_only.params, init.params)
    assert not trees_equal(both.pad_params, init.pad_params)
    assert not trees_equal(both.params, init.params)


def _with_lr(opt_state, lr):
    hyper = dict(opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
    return opt_state._replace(hyperparams=hyper)


def test_dropout_keys_differ_per_device_and_step():
    base = jax.random.key_data(jax.random.key(0))
    keys = jax.pmap(lambda s: jax.random.key_data(step_key(base, s, "batch")), axis_name="batch")(
        jnp.asarray([3] * 8)
    )
    keys_next = jax.pmap(
        lambda s: jax.random.key_data(step_key(base, s, "batch")), axis_name="batch"
    )(jnp.asarray([4] * 8))
    rows = {tuple(k) for k in np.asarray(keys).tolist()} | {
        tuple(k) for k in np.asarray(keys_next).tolist()
    }
    assert len(rows) == 16


def test_dropout_masks_differ_per_device():
    """Same examples on every device, step keys per device: the dropout masks differ."""
    model_def, params, pad_params, stats, _ = split_model(tiny_model(dropout=0.5))
    loss_fn = make_loss_fn(model_def)
    base = jax.random.key_data(jax.random.key(0))
    same = {k: np.repeat(v[:2], 8, axis=0) for k, v in fixed_batch(16).items()}
    per_device = jax.pmap(
        lambda b: loss_fn(params, pad_params, stats, b, step_key(base, 0, "batch"))[0],
        axis_name="batch",
    )(DataParallel("pmap").shard_batch(same))
    assert len(set(np.asarray(per_device).tolist())) > 1


def test_eval_step_counts_masked_examples():
    model = tiny_model()
    model_def, state, _, _ = make_setup(model)
    batch = fixed_batch(16)
    batch["mask"] = np.arange(16) < 11
    dp = DataParallel("shard_map")
    sums = dp.metrics_to_host(dp.compile(make_eval_step(model_def))(dp.replicate(state), batch))
    assert sums["count"] == 11
    assert 0 <= sums["correct"] <= 11
    assert np.isfinite(sums["loss_sum"]) and sums["loss_sum"] > 0


# Every switch value trains a step under pmap over 8 devices (the forward of each switch is
# the models' tests' job): a few combinations that together cover every value.
SWITCH_COMBOS = [
    # Mixed precision too: bf16 compute, fp32 parameters, statistics and optimizer states.
    dict(padding="reflect", pool="soft", norm="none", conv="standard", dtype=jnp.bfloat16),
    dict(padding="partial", pool="avg", norm="batch", conv="standard"),
    dict(padding="circular", pool="max", norm="deconv", conv="standard"),
    dict(
        padding="replicate",
        pool="max",
        norm="batch",
        conv="flex",
        flex_kernel_size=5,
        flex_kwargs=dict(hidden_features=8, num_layers=1),
    ),
]


@pytest.mark.parametrize(
    "switches",
    SWITCH_COMBOS,
    ids=["reflect-soft-none-bf16", "partial-avg-batch", "circular-deconv", "flex"],
)
def test_switch_combination_trains_a_step(switches):
    model = tiny_model(**switches)
    _, init, step, labels = make_setup(model, optimizer=dict(name="adam", learning_rate=1e-2))
    state, metrics = run(DataParallel("pmap"), step, init, [fixed_batch(16)])
    assert all(np.isfinite(v) for v in metrics.values())
    assert max_abs_diff(init.params, state.params) > 0
    fp32 = (state.params, state.pad_params, state.stats, state.opt_task, state.opt_pad)
    floats = {x.dtype for x in jax.tree.leaves(fp32) if np.issubdtype(x.dtype, np.floating)}
    assert floats == {np.dtype(np.float32)}
    if switches["norm"] != "none":
        assert max_abs_diff(init.stats, state.stats) > 0
    if switches["conv"] == "flex":
        assert "mask" in jax.tree.leaves(labels)
