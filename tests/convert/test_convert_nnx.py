"""convjax.convert on plain NNX models: outputs kept, pools/BatchNorms gone, training works."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import convjax.convert
import convjax.nnx as cnn
from convjax.convert import ConversionError, check_optimizers, make_optimizers
from convjax.ops.soft_pool import soft_pool
from tests.convert.models import NnxCNN, NnxConvNd, NnxDecoy, nnx_primitives

X = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))


def _model(pool_fn=nnx.max_pool):
    m = NnxCNN(nnx.Rngs(0), pool_fn=pool_fn)
    m.eval()  # BatchNorm on its running statistics: a deterministic function to compare
    return m


def _max_diff(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)))


@pytest.mark.parametrize("mode", ["zero", "learned"])
def test_same_or_learned_padding_keeps_outputs(mode):
    model = _model()
    new, report = convjax.convert(model, padding=mode, return_report=True)
    # kernels and biases are the original ones, at the same paths
    assert np.array_equal(new.features.layers[0].kernel[...], model.features.layers[0].kernel[...])
    assert isinstance(new.features.layers[0], cnn.Conv)
    assert new.features.layers[0].padding_mode == mode
    assert new.shortcut.padding_mode == "zero"  # a 1x1 conv reads no border
    np.testing.assert_allclose(new(X), model(X), atol=1e-6, rtol=0)
    assert report.counts() == {"converted": 3}
    if mode == "learned":
        assert report.params_added["PadParam"] > 0
        assert any(isinstance(v, cnn.PadParam) for _, v in nnx.iter_graph(new))


def test_reflect_padding_matches_an_independent_reference():
    model = NnxConvNd(nnx.Rngs(0), ndim=2)
    model.eval()
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 4))
    new = convjax.convert(model, padding="reflect")
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    ref = jax.lax.conv_general_dilated(
        xp, model.conv.kernel[...], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    ref = nnx.max_pool(nnx.relu(model.bn(ref)), (2, 2), (2, 2))
    np.testing.assert_allclose(new(x), ref, atol=1e-5)


def test_input_model_is_untouched():
    model = _model()
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    convjax.convert(model, padding="learned", pool="soft", norm="deconv", inputs=X)
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))
    assert type(model.features.layers[0]) is nnx.Conv
    assert type(model) is NnxCNN


def test_pool_max_on_max_model_is_identical_and_pools_switch_below_the_module_level():
    model = _model()
    same = convjax.convert(model, pool="max", inputs=X)
    assert _max_diff(same(X), model(X)) == 0.0
    # max -> avg equals the same weights in a model written with avg pools
    avg_model = _model(pool_fn=nnx.avg_pool)
    nnx.update(avg_model, nnx.state(model))
    to_avg, report = convjax.convert(model, pool="avg", inputs=X, return_report=True)
    np.testing.assert_allclose(to_avg(X), avg_model(X), atol=1e-6)
    assert [c.after for c in report.changes] == ["avg", "avg"]  # the partial and the call
    # max -> soft equals a model written with convjax's SoftPool function
    soft_fn = lambda x, window_shape, strides: soft_pool(x, window_shape, strides)  # noqa: E731
    soft_model = _model(pool_fn=soft_fn)
    nnx.update(soft_model, nnx.state(model))
    to_soft = convjax.convert(model, pool="soft", inputs=X)
    np.testing.assert_allclose(to_soft(X), soft_model(X), atol=1e-6)
    assert "reduce_window_max" in nnx_primitives(model, X)
    assert "reduce_window_max" not in nnx_primitives(to_soft, X)


def test_deconv_pairs_come_from_the_data_flow_and_batchnorms_are_gone():
    model = NnxDecoy(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 2))
    new, report = convjax.convert(model, norm="deconv", inputs=x, return_report=True)
    lines = {c.path: c.after for c in report.changes}
    assert lines["conv_bn"].startswith("kept")  # its input is relu(conv(x))
    assert lines["norm"] == "removed (fused into other)"
    assert isinstance(new.conv, cnn.DeconvConv) and isinstance(new.other, cnn.DeconvConv)
    assert isinstance(new.conv_bn, nnx.BatchNorm)
    assert np.array_equal(new.other.kernel[...], model.other.kernel[...])
    assert new.other.bias is not None  # the deconvolution conv has a bias
    assert nnx_primitives(model, x).count("rsqrt") == 2
    assert nnx_primitives(new, x).count("rsqrt") == 1  # only the kept BatchNorm
    assert new(x).shape == model(x).shape


def test_deconv_cnn_shortcut_and_dense():
    model = _model()
    model.train()
    new, report = convjax.convert(
        model, norm="deconv", deconv_dense=True, inputs=X, return_report=True
    )
    assert isinstance(new.shortcut, cnn.DeconvConv)  # no BatchNorm after it: still deconv
    assert isinstance(new.head, cnn.DeconvDense)
    assert report.counts() == {"converted": 4, "removed": 1}
    assert "rsqrt" not in nnx_primitives(new, X)
    new.eval()
    assert new(X).shape == (2, 3)


def test_flex_conv_replaces_spatial_convs_and_says_weights_are_new():
    model = _model()
    new, report = convjax.convert(
        model, conv="flex", flex_kernel_size=5, inputs=X, return_report=True
    )
    assert isinstance(new.features.layers[0], cnn.FlexConv)
    assert isinstance(new.shortcut, nnx.Conv)  # 1x1 kept, and reported
    assert any(c.path == "shortcut" and c.after.startswith("kept") for c in report.changes)
    assert all("new weights" in c.after for c in report.changes if c.after.startswith("FlexConv"))
    assert new(X).shape == model(X).shape


@pytest.mark.parametrize("ndim", [1, 3])
def test_1d_and_3d_convs(ndim):
    model = NnxConvNd(nnx.Rngs(0), ndim=ndim)
    model.eval()
    x = jax.random.normal(jax.random.key(4), (2, *(4,) * ndim, 4))
    for kw in (dict(padding="zero"), dict(padding="learned"), dict(pool="max")):
        new = convjax.convert(model, inputs=x, **kw)
        assert _max_diff(new(x), model(x)) <= 1e-6
    new = convjax.convert(model, norm="deconv", inputs=x)
    assert isinstance(new.conv, cnn.DeconvConv) and new(x).shape == model(x).shape
    new = convjax.convert(model, padding="replicate", pool="soft", inputs=x)
    assert "reduce_window_max" not in nnx_primitives(new, x)


def test_grouped_and_depthwise_convs():
    for groups in (2, 4):
        model = NnxConvNd(nnx.Rngs(0), ndim=2, groups=groups)
        model.eval()
        x = jax.random.normal(jax.random.key(5), (2, 6, 6, 4))
        new = convjax.convert(model, padding="learned")
        assert new.conv.feature_group_count == groups
        assert _max_diff(new(x), model(x)) <= 1e-6
        assert isinstance(convjax.convert(model, norm="deconv", inputs=x).conv, cnn.DeconvConv)
        with pytest.raises(ConversionError, match=r"^conv: FlexConv has no grouped form"):
            convjax.convert(model, conv="flex")


def test_what_cannot_be_converted_is_a_one_line_error_naming_the_layer():
    dilated = NnxConvNd(nnx.Rngs(0), ndim=2, dilation=2)
    x = jnp.ones((2, 8, 8, 4))
    with pytest.raises(ConversionError, match=r"^conv: DeconvConv has no kernel dilation"):
        convjax.convert(dilated, norm="deconv", inputs=x)
    with pytest.raises(ValueError, match="`inputs`"):
        convjax.convert(_model(), pool="soft")
    with pytest.raises(ValueError, match="pool"):
        convjax.convert(_model(), pool="median", inputs=X)
    with pytest.raises(ValueError, match="conv='flex'"):
        convjax.convert(_model(), norm="deconv", conv="flex", inputs=X)
    with pytest.raises(TypeError, match="unknown options"):
        convjax.convert(_model(), padding="zero", horizon=3)


def _loss(model, x, y):
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss + cnn.pop_padding_losses(model)


def test_train_step_with_both_optimizers_moves_padding_and_warns_without():
    model = _model()
    model.train()
    new = convjax.convert(model, padding="learned", pool="soft", inputs=X)
    y = jnp.array([0, 2])
    opt, opt_pad = make_optimizers(new, optax.sgd(0.1), optax.sgd(0.5))
    assert check_optimizers(new, opt, opt_pad)
    pads0 = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(new, cnn.PadParam)))
    params0 = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(new, nnx.Param)))

    @nnx.jit
    def step(m, opt, opt_pad, x, y):
        diff = nnx.DiffState(0, nnx.Any(nnx.Param, cnn.PadParam))
        grads = nnx.grad(_loss, argnums=diff)(m, x, y)
        opt.update(m, nnx.state(grads, nnx.Param))
        opt_pad.update(m, nnx.state(grads, cnn.PadParam))

    step(new, opt, opt_pad, X, y)
    pads1 = nnx.to_pure_dict(nnx.state(new, cnn.PadParam))
    params1 = nnx.to_pure_dict(nnx.state(new, nnx.Param))
    moved = lambda a, b: any(jax.tree.leaves(jax.tree.map(lambda u, v: bool(np.any(u != v)), a, b)))  # noqa: E731
    assert moved(pads0, pads1) and moved(params0, params1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new(X)  # losses were popped: no warning
        cnn.pop_padding_losses(new)

    # the usual Flax recipe: one optimizer over nnx.Param, no pop -> warned
    plain = convjax.convert(model, padding="learned")
    only_task = nnx.Optimizer(plain, optax.sgd(0.1), wrt=nnx.Param)
    with pytest.warns(UserWarning, match="make_optimizers"):
        assert not check_optimizers(plain, only_task)

    def task_loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(X), y).mean()

    grads = nnx.grad(task_loss)(plain)
    only_task.update(plain, grads)
    with pytest.warns(UserWarning, match="never collected"):
        plain(X)


def test_sequential_partial_and_report_text():
    model = _model()
    new, report = convjax.convert(
        model, padding="reflect", pool="soft", inputs=X, return_report=True
    )
    text = str(report)
    assert "features/layers/0: nnx.Conv(3x3 zero) -> Conv(3x3 reflect)" in text
    assert "pool[0] in features" in text and "max_pool(window=(2, 2)" in text
    assert new.convert_report is report
    assert isinstance(new, NnxCNN)
    # a re-split / merged copy keeps the conversion (the class carries the pooling switch)
    graphdef, state = nnx.split(new)
    again = nnx.merge(graphdef, state)
    np.testing.assert_allclose(again(X), new(X), atol=0)
    p = functools.partial(nnx.max_pool, window_shape=(2, 2))
    assert p(jnp.ones((1, 4, 4, 1))).shape == (1, 3, 3, 1)  # outside a converted call: Flax's


def test_zoo_model_soft_pool_module_becomes_max_like_the_zoo_max_model():
    from convjax.models import build

    kw = dict(num_classes=10, in_features=1, padding="zero", norm="batch", rngs=nnx.Rngs(0))
    soft, hard = build("digits_cnn", pool="soft", **kw), build("digits_cnn", pool="max", **kw)
    nnx.update(hard, nnx.state(soft))
    soft.eval(), hard.eval()
    x = jax.random.normal(jax.random.key(6), (2, 8, 8, 1))
    new, report = convjax.convert(soft, pool="max", inputs=x, return_report=True)
    assert any(c.before == "convjax SoftPool" and c.after == "max" for c in report.changes)
    np.testing.assert_allclose(new(x), hard(x), atol=1e-6)


def test_converted_model_splits_like_a_zoo_model_for_the_trainer():
    from convjax.train.state import split_model

    model = _model()
    new = convjax.convert(model, padding="learned", pool="soft", norm="deconv", inputs=X)
    model_def, params, pad_params, stats, _ = split_model(new)
    assert jax.tree.leaves(pad_params) and "kernel" in params["features"]["layers"][0]
    assert "mean" in stats["features"]["layers"][0]  # the DeconvStat running statistics
    rebuilt = model_def.merge(params, pad_params, stats, train=False)
    new.eval()
    np.testing.assert_allclose(rebuilt(X), new(X), atol=0)
    assert "reduce_window_max" not in nnx_primitives(rebuilt, X)
