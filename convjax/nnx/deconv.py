"""Network Deconvolution layers for Flax NNX: ``DeconvConv`` and ``DeconvDense``.

Drop-in replacements for ``Conv -> BatchNorm`` (Ye et al., "Network Deconvolution", ICLR 2020,
§3): the layer's input patches are whitened with batch statistics in training and with running
averages in evaluation; in both modes the statistics are folded into the kernel and bias so one
convolution runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._checks import (
    cast_to,
    check_choice,
    check_positive,
    check_spatial_rank,
    check_unit_interval,
    normalize_pad_width,
    normalize_tuple,
)
from convjax.nnx.padding import learned_padding_module, pad_op_kwargs
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

__all__ = ["DeconvStat", "DeconvConv", "DeconvDense"]

Initializer = nnx.initializers.Initializer
#: PyTorch's defaults, as the reference FastDeconv / Delinear keep them: weight
#: ``U(+-1/sqrt(fan_in))`` (variance ``1 / (3 fan_in)``); bias (``bias_init=None``)
#: ``U(+-1/sqrt(fan_in))`` with the kernel's fan-in.
default_kernel_init = pytorch_kernel_init()


class DeconvStat(nnx.BatchStat):
    """Running statistics of a deconvolution layer (patch mean and deconv matrix).

    A subclass of ``nnx.BatchStat``: filters on ``nnx.BatchStat`` (e.g. ``nnx.state(model,
    nnx.BatchStat)``) include it, and ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never
    touches it. Float32, except the int32 ``counter`` of a ``freeze=True`` layer.
    """


class _DeconvLayer(nnx.Module):
    """Shared train/eval plumbing of :class:`DeconvConv` and :class:`DeconvDense`."""

    def _prepare(
        self, x: jax.Array, use_running_average: bool | None
    ) -> tuple[bool, jax.Array, jax.Array, jax.Array | None]:
        """``(use stored statistics?, x, kernel, bias)`` cast to the compute dtype."""
        eval_mode = self.use_running_average if use_running_average is None else use_running_average
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = cast_to(self.dtype, x, self.kernel[...], bias)
        return bool(eval_mode or self.freeze_stats), x, kernel, bias

    def stored_stats(self) -> DeconvStats:
        """The running statistics as :class:`convjax.ops.deconv.DeconvStats`."""
        return DeconvStats(self.mean[...], self.deconv[...])

    def _store(self, stats: DeconvStats) -> None:
        self.mean[...], self.deconv[...] = stats.mean, stats.deconv

    def _record(self, stats: DeconvStats) -> None:
        new = update_running_stats(self.stored_stats(), stats, self.momentum)
        self.mean[...], self.deconv[...] = new.mean, new.deconv

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view(model, use_running_average=...)``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class DeconvConv(_DeconvLayer):
    """Convolution with network deconvolution of its input (replaces Conv + BatchNorm).

    Training (``use_running_average=False``): ``y = (X - mu) D W + b`` with the batch patch
    mean ``mu`` and ``D = (Cov + eps I)^(-1/2)`` (paper §3, :func:`convjax.ops.deconv_conv`),
    fused into one convolution; ``grouping="shared"`` (default, the reference code's) stacks the
    strided channel groups as samples of one ``D`` (``y = sum_g (X_g - mu) D W_g + b``),
    ``"per_block"`` whitens every contiguous block of channels with its own ``D_j``. Running
    averages are updated as ``r <- (1 - momentum) r + momentum * batch`` (momentum 0.1, the
    PyTorch convention, not Flax's ``0.99``). Evaluation (``use_running_average=True``, set by
    ``model.eval()``): one convolution with the running statistics folded into the weights.
    ``freeze=True`` is the reference code's first-layer schedule
    (:func:`convjax.ops.deconv_freeze_schedule`): a ``counter`` runs modulo
    ``10 * freeze_iter``; while ``counter <= freeze_iter`` training recomputes the statistics
    (with gradient), otherwise it uses the running statistics as constants and keeps them.
    ``freeze_stats=True`` always uses (and keeps) the running statistics in training.

    Shapes: ``(N, *spatial, in_features) -> (N, *out_spatial, out_features)``; the number of
    spatial dims comes from ``kernel_size``: an int means a square 2-D kernel ``(k, k)``, a
    tuple of 1--3 ints gives a 1-D/2-D/3-D layer.

    Variables: ``kernel`` (``Param``, ``(*kernel_size, in_features / groups, out_features)``),
    ``bias`` (``Param`` or ``None``), ``mean`` ``(nd, F)`` and ``deconv`` ``(nd, F, F)``
    (:class:`DeconvStat`, float32), ``F = prod(kernel_size) * b``, ``b`` the block size,
    ``nd = feature_group_count`` (``"shared"``) or ``in_features / b`` (``"per_block"``); with
    ``freeze=True`` also ``counter`` (:class:`DeconvStat`, int32 scalar).

    Args:
      in_features, out_features: channels.
      kernel_size: int (2-D square) or tuple.
      strides, feature_group_count: as in ``nnx.Conv``.
      padding: the amount, as :class:`convjax.nnx.Conv` (default ``None``: symmetric
        ``k // 2``, PyTorch geometry; ``"SAME"``, ``"VALID"``, int or ``(lo, hi)`` pairs).
      padding_mode: the kind, one of :data:`convjax.ops.pad.DECONV_PADDING_MODES` (zero,
        reflect, replicate, circular, learned): ``x`` is padded first by
        :func:`convjax.ops.pad_for_conv`, exactly as :class:`convjax.nnx.Conv` pads, and the
        deconvolution statistics are taken over the padded patches. ``"partial"`` is rejected:
        its re-weighting has no meaning for a mean-subtracted window (see
        :data:`~convjax.ops.pad.DECONV_PADDING_MODES`).
      padding_kwargs: options of the learned :class:`PaddingModule` (``conv.pad``), only with
        ``padding_mode="learned"``.
      use_bias: learn a bias (recommended: it replaces BatchNorm's shift).
      block, eps, num_iters, sampling_stride, grouping: see :func:`convjax.ops.deconv_conv`
        (the reference first layers use ``num_iters=15, freeze=True``).
      momentum: running-average rate in ``[0, 1]``.
      use_running_average: eval mode; toggled by ``model.train()`` / ``model.eval()``.
      freeze, freeze_iter: the reference freeze schedule (above).
      freeze_stats: always use the stored statistics and never update them.
      axis_name: inside ``pmap``/``shard_map``, average the moments over this axis.
      kernel_init: weight initialiser; default PyTorch's ``U(+-1/sqrt(fan_in))`` (variance
        ``1 / (3 fan_in)``, ``fan_in = prod(kernel_size) * in_features / groups``), as the
        reference FastDeconv keeps it.
      bias_init: bias initialiser; ``None`` (default) = PyTorch's ``U(+-1/sqrt(fan_in))``.
      dtype: compute dtype (``None``: promotion of input and parameters); param_dtype: float32.
      rngs: ``nnx.Rngs`` for the kernel initialiser.

    Example:
      >>> layer = DeconvConv(3, 16, 3, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 8, 8, 3))).shape
      (2, 8, 8, 16)
      >>> layer.eval(); layer(jnp.ones((2, 8, 8, 3))).shape
      (2, 8, 8, 16)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike | None = None,
        padding_mode: str = "zero",
        padding_kwargs: Mapping[str, Any] | None = None,
        use_bias: bool = True,
        block: int = 64,
        eps: float = 1e-5,
        num_iters: int = 5,
        sampling_stride: int = 3,
        momentum: float = 0.1,
        feature_group_count: int = 1,
        grouping: str = "shared",
        use_running_average: bool = False,
        freeze: bool = False,
        freeze_iter: int = 100,
        freeze_stats: bool = False,
        axis_name: str | None = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer | None = None,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if isinstance(kernel_size, int):
            window = normalize_tuple(kernel_size, 2, "kernel_size")
        else:
            window = tuple(kernel_size)
            if not 1 <= len(window) <= 3:
                raise ValueError(
                    f"`kernel_size` must be an int or a tuple of 1 to 3 ints, got {kernel_size!r}."
                )
            window = normalize_tuple(window, len(window), "kernel_size")
        deconv_block_size(in_features, block, feature_group_count)  # validates the grouping
        if out_features % feature_group_count:
            raise ValueError(
                f"`out_features` ({out_features}) must be divisible by `feature_group_count` "
                f"({feature_group_count})."
            )
        check_positive(eps, "eps")
        check_unit_interval(momentum, "momentum")
        check_choice(grouping, GROUPINGS, "grouping")
        deconv_freeze_schedule(jnp.int32(0), freeze_iter)  # validates freeze_iter
        shape = (*window, in_features // feature_group_count, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias: nnx.Param | None
        if use_bias:
            if bias_init is None:
                bias_init = pytorch_bias_init(math.prod(shape[:-1]))
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)
        stats = init_deconv_stats(
            in_features, window, block, feature_group_count, grouping=grouping
        )
        self.mean = DeconvStat(stats.mean)
        self.deconv = DeconvStat(jnp.array(stats.deconv))
        self.counter: DeconvStat | None
        self.counter = DeconvStat(jnp.zeros((), jnp.int32)) if freeze else nnx.data(None)
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = window
        self.strides = normalize_tuple(strides, len(window), "strides")
        check_deconv_padding_mode(padding_mode)
        self.padding = (
            padding
            if padding is None or isinstance(padding, str)
            else normalize_pad_width(padding, len(window))
        )
        self.padding_mode = padding_mode
        self.pad = learned_padding_module(
            in_features, len(window), padding_mode, padding_kwargs, rngs
        )
        self.use_bias = use_bias
        self.block = block
        self.eps = eps
        self.num_iters = num_iters
        self.sampling_stride = sampling_stride
        self.momentum = momentum
        self.feature_group_count = feature_group_count
        self.grouping = grouping
        self.use_running_average = use_running_average
        self.freeze = freeze
        self.freeze_iter = freeze_iter
        self.freeze_stats = freeze_stats
        self.axis_name = axis_name
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Apply the layer; ``use_running_average`` overrides the attribute for this call."""
        use_stored, x, kernel, bias = self._prepare(x, use_running_average)
        n = len(self.kernel_size)
        check_spatial_rank(x, "x", min_spatial=n, max_spatial=n)
        pads = conv_padding(x.shape[1:-1], self.kernel_size, self.strides, self.padding)
        x, pads, loss = pad_for_conv(x, pads, self.padding_mode, **pad_op_kwargs(self.pad))
        if self.pad is not None:
            self.pad.record_loss(loss)
        if use_stored:
            stats = self.stored_stats()
            return deconv_conv_eval(
                x,
                kernel,
                bias,
                stats,
                strides=self.strides,
                padding=pads,
                feature_group_count=self.feature_group_count,
                grouping=self.grouping,
            )
        y, running, counter = deconv_conv_train(
            x,
            kernel,
            bias,
            self.stored_stats(),
            self.counter[...] if self.counter is not None else None,
            momentum=self.momentum,
            freeze_iter=self.freeze_iter,
            strides=self.strides,
            padding=pads,
            block=self.block,
            eps=self.eps,
            num_iters=self.num_iters,
            sampling_stride=self.sampling_stride,
            axis_name=self.axis_name,
            feature_group_count=self.feature_group_count,
            grouping=self.grouping,
        )
        self._store(running)
        if self.counter is not None:
            self.counter[...] = counter
        return y


class DeconvDense(_DeconvLayer):
    """Fully connected layer on decorrelated inputs (the paper's "Delinear").

    ``y = sum_g (x_g - mu) D W_g + b`` over the contiguous blocks ``x_g`` of ``b`` input
    features (paper §3, :func:`convjax.ops.deconv_dense`; ``"shared"``: one ``mu``, ``D`` for
    every block as the reference code, ``"per_block"``: one per block), with the same
    train/eval/``freeze_stats`` behaviour and running averages as :class:`DeconvConv` (the
    reference dense layer has no freeze schedule). Shapes: ``(..., in_features) ->
    (..., out_features)``; every leading dim counts as a sample for the statistics.

    Args:
      in_features, out_features: features.
      use_bias, block (default 512, as the reference uses for CIFAR heads), eps, num_iters,
      grouping, momentum, use_running_average, freeze_stats, axis_name, kernel_init,
      bias_init, dtype, param_dtype, rngs: as in :class:`DeconvConv` (PyTorch's defaults,
      ``fan_in = in_features``, as the reference Delinear).

    Example:
      >>> head = DeconvDense(64, 10, rngs=nnx.Rngs(0))
      >>> head(jnp.ones((8, 64))).shape
      (8, 10)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        block: int = 512,
        eps: float = 1e-5,
        num_iters: int = 5,
        grouping: str = "shared",
        momentum: float = 0.1,
        use_running_average: bool = False,
        freeze_stats: bool = False,
        axis_name: str | None = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer | None = None,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_positive(eps, "eps")
        check_unit_interval(momentum, "momentum")
        check_choice(grouping, GROUPINGS, "grouping")
        stats = init_deconv_stats(in_features, (), block, grouping=grouping)
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias: nnx.Param | None
        if use_bias:
            if bias_init is None:
                bias_init = pytorch_bias_init(in_features)
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)
        self.mean = DeconvStat(stats.mean)
        self.deconv = DeconvStat(jnp.array(stats.deconv))
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.block = block
        self.eps = eps
        self.num_iters = num_iters
        self.grouping = grouping
        self.momentum = momentum
        self.use_running_average = use_running_average
        self.freeze_stats = freeze_stats
        self.axis_name = axis_name
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Apply the layer; ``use_running_average`` overrides the attribute for this call."""
        use_stored, x, kernel, bias = self._prepare(x, use_running_average)
        if use_stored:
            stats = self.stored_stats()
            return deconv_dense_eval(x, kernel, bias, stats, grouping=self.grouping)
        y, stats = deconv_dense(
            x,
            kernel,
            bias,
            block=self.block,
            eps=self.eps,
            num_iters=self.num_iters,
            axis_name=self.axis_name,
            grouping=self.grouping,
        )
        self._record(stats)
        return y
