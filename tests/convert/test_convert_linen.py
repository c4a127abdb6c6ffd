"""convjax.convert on plain Linen models: same init/apply, pretrained params load, outputs kept."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import convjax.convert
from convjax.convert import ConversionError, linen_trainable, make_optimizers
from convjax.linen import sum_padding_losses
from tests.convert.models import LinenConvNd, LinenResNet, LinenVGG, primitives

X = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
EVAL = {"train": False}


def _with_pretrained(new_vars, old_vars):
    """The converted model's variables with every original collection loaded on top."""
    out = dict(new_vars)
    for col, tree in old_vars.items():
        merged = jax.tree_util.tree_flatten_with_path(new_vars.get(col, {}))[0]
        flat = {tuple(k.key for k in p): v for p, v in merged}
        flat.update(
            {tuple(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
        )
        nested: dict = {}
        for keys, v in flat.items():
            d = nested
            for k in keys[:-1]:
                d = d.setdefault(k, {})
            d[keys[-1]] = v
        out[col] = nested
    return out


@pytest.fixture(scope="module")
def resnet():
    model = LinenResNet()
    variables = model.init(jax.random.key(0), X, train=False)
    return model, variables, model.apply(variables, X, train=False)


@pytest.mark.parametrize("kw", [dict(padding="zero"), dict(padding="learned"), dict(pool="max")])
def test_resnet_kept_function_and_pretrained_params_load(resnet, kw):
    model, variables, y0 = resnet
    new, report = convjax.convert(model, inputs=X, call_kwargs=EVAL, return_report=True, **kw)
    fresh = new.init(jax.random.key(5), X, train=False)
    # every original parameter path exists with the same shape
    old_flat = {p: v.shape for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
    new_flat = {p: v.shape for p, v in jax.tree_util.tree_flatten_with_path(fresh)[0]}
    assert all(new_flat.get(p) == s for p, s in old_flat.items())
    y = new.apply(_with_pretrained(fresh, variables), X, train=False)
    assert float(jnp.max(jnp.abs(y - y0))) <= 1e-6
    if kw.get("padding") == "learned":
        assert report.params_added["padding"] > 0
        assert "padding" in fresh and "shortcut" not in fresh["padding"]["LinenBlock_1"]


def test_resnet_soft_pool_is_gone_from_the_program(resnet):
    model, variables, _ = resnet
    new = convjax.convert(model, pool="soft", inputs=X, call_kwargs=EVAL)
    f_old = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    f_new = lambda v, x: new.apply(v, x, train=False)  # noqa: E731
    assert "reduce_window_max" in primitives(f_old, variables, X)
    assert "reduce_window_max" not in primitives(f_new, variables, X)


def test_resnet_deconv_removes_batchnorms_by_data_flow(resnet):
    model, variables, _ = resnet
    new, report = convjax.convert(
        model, norm="deconv", deconv_dense=True, inputs=X, call_kwargs=EVAL, return_report=True
    )
    assert report.counts() == {"converted": 7, "removed": 5}
    assert "LinenBlock_1/shortcut: nn.Conv(1x1/2x2 zero) -> DeconvConv" in str(report)
    fresh = new.init(jax.random.key(0), X, train=True)
    assert "bn_init" not in fresh["params"] and "bn_init" not in fresh["batch_stats"]
    assert (
        fresh["params"]["conv_init"]["kernel"].shape
        == variables["params"]["conv_init"]["kernel"].shape
    )
    assert set(fresh["batch_stats"]["conv_init"]) == {"mean", "deconv"}

    def train_apply(v, x):
        return new.apply(v, x, train=True, mutable=["batch_stats"])[0]

    prims = primitives(train_apply, fresh, X)
    assert "rsqrt" not in prims and "rsqrt" in primitives(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0], variables, X
    )
    # eval (batch_stats immutable) uses the stored statistics
    assert new.apply(fresh, X, train=False).shape == (2, 3)


def test_setup_style_vgg():
    model = LinenVGG()
    variables = model.init(jax.random.key(0), X)
    y0 = model.apply(variables, X)
    new, report = convjax.convert(
        model, padding="learned", pool="max", inputs=X, return_report=True
    )
    assert [c.path for c in report.changes][:2] == ["convs_0", "convs_1"]
    fresh = new.init(jax.random.key(0), X)
    y = new.apply(_with_pretrained(fresh, variables), X)
    assert float(jnp.max(jnp.abs(y - y0))) <= 1e-6
    soft = convjax.convert(model, pool="soft", inputs=X)
    assert "reduce_window_max" not in primitives(lambda v, x: soft.apply(v, x), variables, X)
    flex = convjax.convert(model, conv="flex", flex_kernel_size=5, inputs=X)
    assert flex.apply(flex.init(jax.random.key(0), X), X).shape == y0.shape


@pytest.mark.parametrize("ndim,groups", [(1, 1), (3, 1), (2, 4)])
def test_1d_3d_and_depthwise(ndim, groups):
    model = LinenConvNd(ndim=ndim, groups=groups)
    x = jax.random.normal(jax.random.key(2), (2, *(4,) * ndim, 4))
    variables = model.init(jax.random.key(0), x, train=False)
    y0 = model.apply(variables, x, train=False)
    new = convjax.convert(model, padding="learned", inputs=x, call_kwargs=EVAL)
    y = new.apply(
        _with_pretrained(new.init(jax.random.key(0), x, train=False), variables), x, train=False
    )
    assert float(jnp.max(jnp.abs(y - y0))) <= 1e-6
    deconv = convjax.convert(model, norm="deconv", inputs=x, call_kwargs=EVAL)
    assert deconv.apply(deconv.init(jax.random.key(0), x, train=False), x, train=False).shape == (
        y0.shape
    )
    if groups > 1:
        with pytest.raises(ConversionError, match=r"^Conv_0: FlexConv has no grouped form"):
            convjax.convert(model, conv="flex", inputs=x, call_kwargs=EVAL)


@pytest.mark.slow  # ~20 s; the README's Linen example test trains params and padding too
def test_linen_train_step_moves_padding_and_warns_when_losses_are_dropped(resnet):
    model, variables, _ = resnet
    new = convjax.convert(model, padding="learned", inputs=X, call_kwargs=EVAL)
    v = _with_pretrained(new.init(jax.random.key(0), X, train=True), variables)
    tx = make_optimizers(v, optax.sgd(0.1), optax.sgd(0.5))
    trainable = linen_trainable(v)
    opt_state = tx.init(trainable)
    labels = jnp.array([0, 1])

    def loss_fn(tr):
        logits, mutated = new.apply({**v, **tr}, X, train=True, mutable=["batch_stats", "losses"])
        task = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return task + sum_padding_losses(mutated)

    grads = jax.grad(loss_fn)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    after = optax.apply_updates(trainable, updates)
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), trainable, after)
    assert any(jax.tree.leaves(moved["padding"])) and any(jax.tree.leaves(moved["params"]))
    with pytest.warns(UserWarning, match="padding losses are dropped"):
        new.apply(v, X, train=True, mutable=["batch_stats"])
