"""Models: every name builds with the right logits shape, published parameter counts, every
switch gives finite logits and gradients, train/eval semantics, clear errors.

Big models are only traced abstractly (``jax.eval_shape``): no parameters are materialised and
nothing is compiled. Numerics run on tiny widths, eagerly.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from convjax.models import available_models, build
from convjax.models.blocks import adaptive_avg_pool
from convjax.nnx import PadParam, pop_padding_losses

REQUIRED = {
    "vgg11",
    "vgg16",
    "resnet20",
    "resnet56",
    "resnet18",
    "resnet50",
    "flexnet7",
    "flexnet_tiny",
    "flextcn",
    "digits_cnn",
}

# Input shape each model is traced with in the abstract shape test (CIFAR / ImageNet / digits /
# sequence sizes).
INPUTS = {
    "vgg11": (2, 32, 32, 3),
    "vgg16": (2, 32, 32, 3),
    "vgg11_imagenet": (2, 64, 64, 3),
    "vgg16_imagenet": (2, 64, 64, 3),
    "resnet20": (2, 32, 32, 3),
    "resnet56": (2, 32, 32, 3),
    "resnet18": (2, 64, 64, 3),
    "resnet50": (2, 64, 64, 3),
    "flexnet7": (2, 32, 32, 3),
    "flexnet_tiny": (2, 8, 8, 1),
    "flextcn": (2, 64, 1),
    "digits_cnn": (2, 8, 8, 1),
}

# Published parameter counts (exact where the architecture is the reference one):
#   He et al. 2016 CIFAR ResNets with option-A shortcuts: 0.27M / 0.85M (269,722 / 853,018 at
#   10 classes); torchvision resnet18 / resnet50: 11,689,512 / 25,557,032; torchvision vgg11 /
#   vgg16 (conv with bias, no BN): 132,863,336 / 138,357,544; Keras VGG16 without top:
#   14,714,688 conv parameters, + a 512x10 linear head on CIFAR.
PUBLISHED = {
    ("resnet20", "batch", 10): 269_722,
    ("resnet56", "batch", 10): 853_018,
    ("resnet18", "batch", 1000): 11_689_512,
    ("resnet50", "batch", 1000): 25_557_032,
    ("vgg11_imagenet", "none", 1000): 132_863_336,
    ("vgg16_imagenet", "none", 1000): 138_357_544,
    ("vgg16", "none", 10): 14_714_688 + 512 * 10 + 10,
}


def _abstract(name: str, shape: tuple[int, ...], **kw):
    """Trace build + forward abstractly; return (logits ShapeDtypeStruct, number of params)."""
    count = []

    def run(x):
        model = build(name, in_features=shape[-1], rngs=nnx.Rngs(0), **kw)
        count.append(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
        return model(x)

    out = jax.eval_shape(run, jax.ShapeDtypeStruct(shape, jnp.float32))
    return out, count[0]


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


def _ce(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _loss_and_grads(model, x, y, *, wrt=nnx.Param, jit: bool = False):
    """One backward pass. ``jit`` for layers with many small ops (FlexConv, deconvolution,
    learned padding): one compile is cheaper there than dispatching each op eagerly."""
    fn = nnx.value_and_grad(_ce_and_logits, argnums=nnx.DiffState(0, wrt), has_aux=True)
    (loss, logits), grads = (nnx.jit(fn) if jit else fn)(model, x, y)
    return loss, logits, grads


def _ce_and_logits(model, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


def test_registry_has_required_names():
    assert REQUIRED <= set(available_models())
    assert set(INPUTS) == set(available_models())


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_model_maps_input_to_logits(name):
    out, _ = _abstract(name, INPUTS[name], num_classes=7)
    assert out.shape == (INPUTS[name][0], 7)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize(
    "name, kw",
    [
        ("resnet18", {"pool": "soft", "padding": "learned", "norm": "deconv"}),
        ("resnet50", {"pool": "avg", "padding": "partial", "norm": "none"}),
        ("vgg16_imagenet", {"norm": "deconv", "padding": "replicate"}),
        ("flexnet7", {"conv": "standard", "norm": "deconv", "padding": "learned"}),
        ("flextcn", {"conv": "standard", "norm": "deconv"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v.values()),
)
def test_switch_combinations_wire_up_on_full_models(name, kw):
    out, _ = _abstract(name, INPUTS[name], num_classes=5, **kw)
    assert out.shape == (INPUTS[name][0], 5)


@pytest.mark.parametrize("key", sorted(PUBLISHED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_parameter_counts_match_published(key):
    name, norm, classes = key
    _, n = _abstract(name, INPUTS[name], num_classes=classes, norm=norm)
    assert n == PUBLISHED[key]


def test_vgg16_cifar_batchnorm_count():
    # BN (scale + shift per channel) replaces the conv bias: +1 parameter per conv channel.
    channels = sum(c for stage in ((64,) * 2, (128,) * 2, (256,) * 3, (512,) * 6) for c in stage)
    _, n = _abstract("vgg16", INPUTS["vgg16"], num_classes=10)
    assert n == PUBLISHED[("vgg16", "none", 10)] + channels


def test_flexnet7_parameter_count_near_published():
    # Paper: FlexNet-7 on CIFAR-10 has 0.67M parameters (kernel-net sizes differ slightly
    # between implementations, so allow 5 %).
    _, n = _abstract("flexnet7", INPUTS["flexnet7"], num_classes=10)
    assert abs(n - 670_000) / 670_000 < 0.05, n


# ---------------------------------------------------------------------------------------------
# Every switch value on a tiny model: finite logits and finite, non-zero gradients.

# Tiny models use width 4 everywhere, so parameter shapes (and the compiled initialisers and
# eager ops) are shared between tests. conv="flex" is covered by the FlexNet/FlexTCN tests
# (flexnet_tiny there also runs the padding and pool switches through FlexConv and SoftPool).
TINY = (4, 4)
SWITCHES = [
    *[{"padding": p} for p in ("zero", "reflect", "replicate", "circular", "partial", "learned")],
    *[{"pool": p} for p in ("avg", "soft")],
    {"norm": "none"},
    {"norm": "deconv", "padding": "reflect"},
]


@pytest.fixture(scope="module")
def digits_batch():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
    y = jnp.asarray([0, 3, 5, 9], jnp.int32)
    return x, y


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: "-".join(map(str, s.values())))
def test_switch_gives_finite_logits_and_grads(switch, digits_batch):
    x, y = digits_batch
    model = build(
        "digits_cnn", num_classes=10, in_features=1, widths=TINY, rngs=nnx.Rngs(0), **switch
    )
    # One backward pass over task and padding parameters (as the trainer does).
    heavy = switch.get("padding") == "learned" or switch.get("norm") == "deconv"
    _, logits, grads = _loss_and_grads(model, x, y, wrt=nnx.Any(nnx.Param, PadParam), jit=heavy)
    assert logits.shape == (4, 10) and _finite(logits)
    task = nnx.state(grads, nnx.Param)
    assert _finite(task)
    assert sum(float(jnp.linalg.norm(g)) for g in jax.tree.leaves(task)) > 0.0
    pad = jax.tree.leaves(nnx.state(grads, PadParam))
    assert bool(pad) == (switch.get("padding") == "learned")
    # The task loss never moves padding parameters; the padding loss is recorded instead.
    assert all(bool(jnp.all(g == 0)) for g in pad)
    if pad:
        assert float(pop_padding_losses(model)) > 0.0


@pytest.mark.parametrize(
    "name, kw, shape",
    [
        ("resnet20", {"widths": (4, 4, 4)}, (2, 8, 8, 3)),
        (
            "flexnet_tiny",
            {"flex_kernel_size": 9, "widths": TINY, "padding": "circular", "pool": "soft"},
            (2, 8, 8, 1),
        ),
    ],
    ids=["resnet20", "flexnet_tiny"],
)
def test_model_families_finite_grads(name, kw, shape):
    x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    y = jnp.asarray([1, 2], jnp.int32)
    model = build(name, num_classes=3, in_features=shape[-1], rngs=nnx.Rngs(0), **kw)
    loss, _, grads = _loss_and_grads(model, x, y, jit=True)
    assert np.isfinite(float(loss)) and _finite(grads)
    assert sum(float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)) > 0.0


def test_jit_matches_eager(digits_batch):
    x, _ = digits_batch
    model = build("digits_cnn", num_classes=10, in_features=1, widths=TINY, rngs=nnx.Rngs(0))
    model.eval()
    eager = model(x)
    jitted = nnx.jit(lambda m, v: m(v))(model, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-5)


def test_compute_dtype_bf16_keeps_fp32_params(digits_batch):
    x, _ = digits_batch
    model = build(
        "digits_cnn",
        num_classes=10,
        in_features=1,
        widths=TINY,
        dtype=jnp.bfloat16,
        rngs=nnx.Rngs(0),
    )
    logits = model(x)
    assert logits.dtype == jnp.bfloat16 and _finite(logits)
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
    assert {s.dtype for s in jax.tree.leaves(nnx.state(model, nnx.BatchStat))} == {
        jnp.dtype("float32")
    }


# ---------------------------------------------------------------------------------------------
# train() / eval()


@pytest.mark.parametrize("norm", ["batch", "deconv"])
def test_train_eval_toggle_statistics_and_dropout(norm, digits_batch):
    x, _ = digits_batch
    model = build(
        "digits_cnn",
        num_classes=10,
        in_features=1,
        widths=TINY,
        norm=norm,
        dropout=0.5,
        rngs=nnx.Rngs(0),
    )

    def stats():
        return [np.asarray(s) for s in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]

    assert stats(), "model has no statistics"
    model.train()
    before = stats()
    a, b = model(x), model(x)
    after = stats()
    assert any(not np.array_equal(u, v) for u, v in zip(before, after)), "train: stats frozen"
    assert not np.allclose(np.asarray(a), np.asarray(b)), "train: dropout inactive"
    model.eval()
    c, d = model(x), model(x)
    np.testing.assert_array_equal(np.asarray(c), np.asarray(d))
    for u, v in zip(after, stats()):
        np.testing.assert_array_equal(u, v)


def test_axis_name_reaches_every_cross_batch_statistic():
    model = nnx.eval_shape(
        lambda: build(
            "resnet20", num_classes=10, in_features=3, axis_name="batch", rngs=nnx.Rngs(0)
        )
    )
    norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
    assert len(norms) == 19 and all(m.axis_name == "batch" for m in norms)
    model = nnx.eval_shape(
        lambda: build(
            "digits_cnn",
            num_classes=10,
            in_features=1,
            norm="deconv",
            axis_name="batch",
            widths=(4,),
            rngs=nnx.Rngs(0),
        )
    )
    deconvs = [m for _, m in nnx.iter_graph(model) if hasattr(m, "axis_name")]
    assert len(deconvs) == 3 and all(m.axis_name == "batch" for m in deconvs)


def test_flextcn_grads_and_causality():
    model = build(
        "flextcn", num_classes=3, in_features=1, widths=(4,), flex_kernel_size=9, rngs=nnx.Rngs(0)
    )
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 1)), jnp.float32)
    loss, _, grads = _loss_and_grads(model, x, jnp.asarray([0, 2], jnp.int32), jit=True)
    assert np.isfinite(float(loss)) and _finite(grads)
    assert sum(float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)) > 0.0
    # In eval mode (fixed BN statistics) output t depends only on inputs <= t.
    model.eval()
    x2 = x.at[:, 10:].add(5.0)

    def trunk(v):
        v = model.stem(v)
        for block in model.blocks:
            v = block(v)
        return v

    h, h2 = trunk(x), trunk(x2)
    np.testing.assert_allclose(np.asarray(h[:, :10]), np.asarray(h2[:, :10]), atol=1e-5)
    assert not np.allclose(np.asarray(h[:, 10:]), np.asarray(h2[:, 10:]))


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"name": "vgg19"}, "name"),
        ({"padding": "mirror"}, "padding"),
        ({"pool": "l2"}, "pool"),
        ({"norm": "layer"}, "norm"),
        ({"conv": "dilated"}, "conv"),
        ({"norm": "deconv", "conv": "flex"}, "norm='deconv'.*conv='flex'"),
        ({"norm": "deconv", "padding": "partial"}, "padding='partial'.*norm='deconv'"),
        ({"conv": "flex", "padding": "learned"}, "padding='learned'.*conv='flex'"),
        ({"conv": "flex", "padding": "partial"}, "padding='partial'.*conv='flex'"),
        ({"name": "flextcn", "padding": "reflect"}, "padding='reflect'.*flextcn"),
        ({"flex_kernel_size": 8, "conv": "flex"}, "flex_kernel_size.*odd"),
        ({"flex_kernel_size": 0}, "flex_kernel_size"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_switches_raise(kw, match):
    kw = {"name": "digits_cnn", "widths": TINY, **kw}
    with pytest.raises(ValueError, match=match):
        build(num_classes=10, in_features=1, rngs=nnx.Rngs(0), **kw)


def test_bad_inputs_raise():
    model = build("digits_cnn", num_classes=10, in_features=1, widths=TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="channels"):
        model(jnp.ones((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="rank"):
        model(jnp.ones((2, 8, 8)))
    with pytest.raises(ValueError, match="at least 4x4"):
        model(jnp.ones((2, 2, 2, 1)))
    with pytest.raises(TypeError, match="floating"):
        model(jnp.ones((2, 8, 8, 1), jnp.int32))


# ---------------------------------------------------------------------------------------------
# Helpers


def _adaptive_avg_pool_reference(x: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    n, h, w, c = x.shape
    y = np.zeros((n, *out, c), np.float64)
    for i, j in itertools.product(range(out[0]), range(out[1])):
        h0, h1 = (i * h) // out[0], -(-((i + 1) * h) // out[0])
        w0, w1 = (j * w) // out[1], -(-((j + 1) * w) // out[1])
        y[:, i, j] = x[:, h0:h1, w0:w1].astype(np.float64).mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("size", [(14, 14), (10, 9), (3, 2)])
def test_adaptive_avg_pool_matches_reference(size):
    x = np.random.default_rng(3).normal(size=(2, *size, 3)).astype(np.float32)
    got = adaptive_avg_pool(jnp.asarray(x), (7, 7))
    np.testing.assert_allclose(np.asarray(got), _adaptive_avg_pool_reference(x, (7, 7)), atol=1e-5)


@pytest.mark.parametrize(
    "name, kw, first_is_reference",
    [
        ("vgg16", {"width_multiplier": 0.0625}, True),
        ("vgg11_imagenet", {"width_multiplier": 0.0625}, True),
        ("resnet18", {"width_multiplier": 0.125}, True),
        ("resnet50", {"width_multiplier": 0.125}, True),
        ("resnet18", {"width_multiplier": 0.125, "stem": "cifar"}, False),
        ("resnet20", {}, False),
    ],
)
def test_deconv_first_layer_gets_reference_settings(name, kw, first_is_reference):
    """The reference code whitens the first conv of its VGGs and ImageNet ResNets with 15
    Newton-Schulz iterations and the freeze schedule; CIFAR ResNets keep the defaults, and
    every later layer keeps the config's settings."""
    model = nnx.eval_shape(
        lambda: build(
            name,
            num_classes=10,
            in_features=3,
            norm="deconv",
            deconv_kwargs={"num_iters": 7},
            rngs=nnx.Rngs(0),
            **kw,
        )
    )
    first = model.features[0].conv if name.startswith("vgg") else model.stem.conv
    deconvs = [m for _, m in nnx.iter_graph(model) if type(m).__name__ == "DeconvConv"]
    rest = [m for m in deconvs if m is not first]
    assert first in deconvs and len(rest) == len(deconvs) - 1 > 0
    assert (first.num_iters, first.freeze) == ((15, True) if first_is_reference else (7, False))
    assert (first.counter is not None) == first_is_reference
    assert all(m.num_iters == 7 and not m.freeze and m.counter is None for m in rest)


@pytest.mark.slow  # builds ImageNet ResNets; the initialisers are unit-tested in tests/ops
def test_imagenet_resnet_deconv_init_is_kaiming_fan_out():
    """Reference ImageNet ResNets: kaiming fan-out normal on every FastDeconv weight, the
    Delinear head at PyTorch's default; the CIFAR stem keeps PyTorch's defaults throughout."""

    kw = dict(num_classes=10, in_features=3, norm="deconv", width_multiplier=0.5)
    net = build("resnet18", rngs=nnx.Rngs(0), **kw)
    w = np.asarray(net.blocks[0].conv1.conv.kernel[...], np.float64)  # (3, 3, 32, 32)
    assert w.var() * (3 * 3 * w.shape[-1]) / 2 == pytest.approx(1.0, rel=0.1)
    head = np.asarray(net.classifier.linear.kernel[...], np.float64)
    assert np.abs(head).max() <= 1 / np.sqrt(head.shape[0]) * (1 + 1e-6)
    cifar = build("resnet18", rngs=nnx.Rngs(0), stem="cifar", **kw)
    w = np.asarray(cifar.blocks[0].conv1.conv.kernel[...], np.float64)
    assert np.abs(w).max() <= 1 / np.sqrt(3 * 3 * w.shape[-2]) * (1 + 1e-6)
