"""FlexTCN sequence presets: the horizon is the sequence length, and the network sees it all."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax.models import build
from convjax.nnx import FlexConv
from convjax.ops.fft_conv import use_fft
from convjax.ops.flex_conv import flex_conv, flex_conv_init
from convjax.train.loop import build_model


def _flexconvs(model):
    return [m for _, m in nnx.iter_graph(model) if isinstance(m, FlexConv)]


@pytest.mark.parametrize(
    "name,sequence", [("smnist_flextcn", "flatten"), ("pmnist_flextcn", "permute")]
)
def test_sequence_presets_set_the_horizon_to_the_sequence_length(name, sequence):
    config = importlib.import_module(f"convjax.configs.{name}").get_config()
    assert config.data.sequence == sequence and config.optimizer.mask_lr_factor == 0.1
    assert config.aliasing_weight == 0.0
    model = nnx.eval_shape(lambda: build_model(config, num_classes=10, in_features=1))
    layers = _flexconvs(model)
    assert len(layers) == 9  # stem + 2 x 4 blocks
    for layer in layers:
        assert layer.kernel_size == 784 and layer.causal
        assert layer.bucket_sizes()[-1] == 784  # the ladder reaches the whole sequence
    assert model.receptive_field() >= 784
    # sizes from 65 up -- the whole horizon included -- take the FFT path on "auto"
    assert use_fft((784,)) and use_fft((65,)) and not use_fft((33,))


def test_fft_path_is_taken_for_the_whole_sequence_kernel():
    p = flex_conv_init(
        jax.random.key(0), 1, 1, 2, kernel_size=784, causal=True, num_layers=1, hidden_features=4
    )
    x = jnp.ones((1, 784, 1))
    ops = str(
        jax.make_jaxpr(lambda q: flex_conv(q, x, kernel_size=784, causal=True, buckets=(784,)))(p)
    )
    assert "fft" in ops and "conv_general_dilated" not in ops


def _input_gradient(horizon, length, sigma):
    """d logits[0, 0] / d x for a 3-conv FlexTCN whose masks have width ``sigma`` (eval mode)."""
    model = build(
        "flextcn",
        num_classes=2,
        in_features=1,
        widths=(4,),
        flex_kernel_size=horizon,
        flex_kwargs={"hidden_features": 4, "num_layers": 1, "buckets": (horizon,)},
        rngs=nnx.Rngs(0),
    )
    for layer in _flexconvs(model):
        layer.mask_sigma[...] = jnp.full((1,), sigma)
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, length, 1)), jnp.float32)
    graphdef, state = nnx.split(model)
    grad = jax.jit(jax.grad(lambda a: nnx.merge(graphdef, state)(a)[0, 0]))(x)
    return np.asarray(grad[0, :, 0]), model.receptive_field()


def test_flextcn_receptive_field_covers_the_input_length():
    """With the horizon = the length (784), the first step reaches the last output."""
    grad, field = _input_gradient(784, 784, sigma=2.0)  # masks open over the whole horizon
    assert field >= 784 and np.all(np.isfinite(grad))
    # (the FFT path leaves ~1e-9 round-off, ~5e-12 of the max; with MAGNet's PyTorch-default
    # output bias the newest inputs weigh ~1e-5 of the max: real, so they must count)
    big = np.abs(grad) > 1e-7 * np.abs(grad).max()
    assert big[0] and big.all()
    # the old preset horizon (33): 3 layers reach 97 steps; the earlier ones are invisible
    grad33, field33 = _input_gradient(33, 784, sigma=2.0)
    assert field33 == 97 and np.count_nonzero(grad33[: 784 - 97]) == 0
    assert np.count_nonzero(grad33[784 - 97 :]) > 0
