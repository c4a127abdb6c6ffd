"""Network Deconvolution layers for Flax Linen: ``DeconvConv`` and ``DeconvDense``.

Same maths as :mod:`convjax.nnx.deconv` (Ye et al., "Network Deconvolution", ICLR 2020, §3)
with Linen conventions: parameters ``kernel``/``bias`` in ``params``, running statistics
``mean`` and ``deconv`` in the ``batch_stats`` collection (pass ``mutable=["batch_stats"]`` in
training, like BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from convjax._checks import (
    cast_to,
    check_choice,
    check_spatial_rank,
    check_unit_interval,
    normalize_tuple,
)
from convjax.linen.padding import learned_padding_module, pad_op_kwargs
from convjax.ops.conv import conv_padding, pad_for_conv
from convjax.ops.deconv import (
    GROUPINGS,
    DeconvStats,
    deconv_block_size,
    deconv_conv_eval,
    deconv_conv_train,
    deconv_dense,
    deconv_dense_eval,
    deconv_freeze_schedule,
    init_deconv_stats,
    pytorch_bias_init,
    pytorch_kernel_init,
    update_running_stats,
)
from convjax.ops.pad import PaddingLike, check_deconv_padding_mode

__all__ = ["DeconvConv", "DeconvDense"]

Initializer = Any
#: PyTorch's defaults, as the reference FastDeconv / Delinear keep them (see
#: :class:`convjax.nnx.DeconvConv`); ``bias_init=None`` = ``U(+-1/sqrt(fan_in))``.
default_kernel_init = pytorch_kernel_init()


def _running_update(module: nn.Module, stats: DeconvStats, momentum: float) -> None:
    """``r <- (1 - momentum) r + momentum * batch`` for both statistics (not at init)."""
    if module.is_initializing():
        return
    running = DeconvStats(*(module.get_variable("batch_stats", n) for n in DeconvStats._fields))
    new = update_running_stats(running, stats, momentum)
    for name, value in zip(DeconvStats._fields, new):
        module.put_variable("batch_stats", name, value)


class DeconvConv(nn.Module):
    """Convolution with network deconvolution of its input (replaces Conv + BatchNorm), Linen.

    Training (``use_running_average=False``): ``y = (X - mu) D W + b`` with batch statistics
    (:func:`convjax.ops.deconv_conv`, ``grouping="shared"`` by default: ``y = sum_g (X_g - mu)
    D W_g + b`` with one ``D`` as the reference code; ``"per_block"``: one ``D_j`` per block)
    fused into one convolution, and ``batch_stats`` updated as ``r <- (1 - momentum) r +
    momentum * batch`` (momentum 0.1). Evaluation: one convolution with the stored statistics
    folded in. ``freeze=True``: the reference schedule (a ``counter`` in ``batch_stats`` runs
    modulo ``10 * freeze_iter``; statistics recomputed with gradient while ``counter <=
    freeze_iter``, the stored ones used as constants otherwise). ``freeze_stats`` always uses and
    keeps the stored ones.

    Shapes: ``(N, *spatial, C_in) -> (N, *out_spatial, features)``; an int ``kernel_size`` is
    used for every spatial dim of the input (1-D/2-D/3-D).

    Attributes:
      features: output channels.
      kernel_size: int or tuple with one entry per spatial dim.
      strides, feature_group_count: as ``nn.Conv``.
      padding, padding_mode, padding_kwargs: as :class:`convjax.nnx.DeconvConv` (default
        symmetric ``k // 2``; modes :data:`convjax.ops.pad.DECONV_PADDING_MODES`, padded by
        :func:`convjax.ops.pad_for_conv` as :class:`convjax.linen.Conv` pads; the learned
        filter is submodule ``"pad"`` in ``"padding"``, its loss sown into ``"losses"``).
      use_bias, block, eps, num_iters, sampling_stride, grouping, momentum, freeze,
        freeze_iter, freeze_stats, axis_name: as in :class:`convjax.nnx.DeconvConv`.
      use_running_average: eval mode (may instead be passed to ``__call__``, as BatchNorm).
      dtype, param_dtype: as ``nn.Conv``. kernel_init, bias_init: default PyTorch's
        ``U(+-1/sqrt(fan_in))`` for both (``bias_init=None``), as the reference FastDeconv
        and Delinear keep them.

    Example:
      >>> layer = DeconvConv(16, 3)
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> variables = layer.init(jax.random.key(0), x, use_running_average=False)
      >>> y, upd = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
      >>> y.shape, upd["batch_stats"]["deconv"].shape
      ((2, 8, 8, 16), (1, 27, 27))
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike | None = None
    padding_mode: str = "zero"
    padding_kwargs: Mapping[str, Any] | None = None
    use_bias: bool = True
    block: int = 64
    eps: float = 1e-5
    num_iters: int = 5
    sampling_stride: int = 3
    momentum: float = 0.1
    feature_group_count: int = 1
    grouping: str = "shared"
    use_running_average: bool | None = None
    freeze: bool = False
    freeze_iter: int = 100
    freeze_stats: bool = False
    axis_name: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Apply the layer to ``x`` of shape ``(N, *spatial, C_in)``.

        ``deterministic`` (default: ``use_running_average``) stops the learned padding loss.
        """
        eval_mode = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        check_unit_interval(self.momentum, "momentum")
        check_choice(self.grouping, GROUPINGS, "grouping")
        deconv_freeze_schedule(jnp.int32(0), self.freeze_iter)  # validates freeze_iter
        n = check_spatial_rank(x, "x")
        window = normalize_tuple(self.kernel_size, n, "kernel_size")
        c_in = x.shape[-1]
        groups = self.feature_group_count
        deconv_block_size(c_in, self.block, groups)
        kernel = self.param(
            "kernel", self.kernel_init, (*window, c_in // groups, self.features), self.param_dtype
        )
        bias_init = self.bias_init or pytorch_bias_init(math.prod(window) * (c_in // groups))
        bias = (
            self.param("bias", bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        init = init_deconv_stats(c_in, window, self.block, groups, grouping=self.grouping)
        mean = self.variable("batch_stats", "mean", lambda: init.mean)
        deconv = self.variable("batch_stats", "deconv", lambda: jnp.array(init.deconv))
        counter = (
            self.variable("batch_stats", "counter", lambda: jnp.zeros((), jnp.int32))
            if self.freeze
            else None
        )
        x, kernel, bias = cast_to(self.dtype, x, kernel, bias)
        check_deconv_padding_mode(self.padding_mode)
        pad_module = learned_padding_module(self.padding_mode, self.padding_kwargs)
        det = eval_mode if deterministic is None else deterministic
        pads = conv_padding(x.shape[1:-1], window, self.strides, self.padding)
        x, pads, loss = pad_for_conv(
            x, pads, self.padding_mode, **pad_op_kwargs(pad_module, c_in, n, det)
        )
        if pad_module is not None:
            pad_module.record_loss(loss)
        running = DeconvStats(mean.value, deconv.value)
        if eval_mode or self.freeze_stats:
            return deconv_conv_eval(
                x,
                kernel,
                bias,
                running,
                strides=self.strides,
                padding=pads,
                feature_group_count=groups,
                grouping=self.grouping,
            )
        y, new, new_counter = deconv_conv_train(
            x,
            kernel,
            bias,
            running,
            counter.value if counter is not None else None,
            momentum=self.momentum,
            freeze_iter=self.freeze_iter,
            strides=self.strides,
            padding=pads,
            block=self.block,
            eps=self.eps,
            num_iters=self.num_iters,
            sampling_stride=self.sampling_stride,
            axis_name=None if self.is_initializing() else self.axis_name,
            feature_group_count=groups,
            grouping=self.grouping,
        )
        if not self.is_initializing():
            mean.value, deconv.value = new.mean, new.deconv
            if counter is not None:
                counter.value = new_counter
        return y


class DeconvDense(nn.Module):
    """Fully connected layer on decorrelated inputs ("Delinear"), Linen.

    ``y = sum_g (x_g - mu) D W_g + b`` over blocks of input features
    (:func:`convjax.ops.deconv_dense`, ``grouping`` as there), with the same modes (no freeze
    schedule, as the reference dense layer) and ``batch_stats`` as :class:`DeconvConv`.
    Shapes: ``(..., C_in) -> (..., features)``.

    Example:
      >>> head = DeconvDense(10)
      >>> x = jnp.ones((8, 64))
      >>> variables = head.init(jax.random.key(0), x, use_running_average=True)
      >>> head.apply(variables, x, use_running_average=True).shape
      (8, 10)
    """

    features: int
    use_bias: bool = True
    block: int = 512
    eps: float = 1e-5
    num_iters: int = 5
    grouping: str = "shared"
    momentum: float = 0.1
    use_running_average: bool | None = None
    freeze_stats: bool = False
    axis_name: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Apply the layer to ``x`` of shape ``(..., C_in)``."""
        check_choice(self.grouping, GROUPINGS, "grouping")
        eval_mode = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        check_unit_interval(self.momentum, "momentum")
        c_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (c_in, self.features), self.param_dtype)
        bias_init = self.bias_init or pytorch_bias_init(c_in)
        bias = (
            self.param("bias", bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        init = init_deconv_stats(c_in, (), self.block, grouping=self.grouping)
        mean = self.variable("batch_stats", "mean", lambda: init.mean)
        deconv = self.variable("batch_stats", "deconv", lambda: jnp.array(init.deconv))
        x, kernel, bias = cast_to(self.dtype, x, kernel, bias)
        if eval_mode or self.freeze_stats:
            running = DeconvStats(mean.value, deconv.value)
            return deconv_dense_eval(x, kernel, bias, running, grouping=self.grouping)
        y, stats = deconv_dense(
            x,
            kernel,
            bias,
            block=self.block,
            eps=self.eps,
            num_iters=self.num_iters,
            axis_name=None if self.is_initializing() else self.axis_name,
            grouping=self.grouping,
        )
        _running_update(self, stats, self.momentum)
        return y
