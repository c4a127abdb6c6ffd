"""Pure, Flax-free operations: jit-, vmap-, grad- and pmap-safe, channels-last.

Each op lives in its own file, named after it (the function is re-exported here, so use
``from convjax.ops.<file> import ...`` to reach a file's other names). Window, stride and
padding arguments follow ``flax.linen.max_pool`` (see :mod:`convjax._checks`).

- padding vocabulary (:mod:`convjax.ops.pad`: mode names, ``PadWidth``) and classic
  padding: :func:`pad`; the padded convolution of every conv layer: :func:`padded_conv`,
  :func:`pad_by_mode`, :func:`conv_padding` (default symmetric ``k // 2``)
- SoftPool: :func:`soft_pool`
- Network Deconvolution: :func:`isqrt_newton_schulz`, :func:`deconv_conv`, :func:`deconv_dense`
- FlexConv: :func:`gaussian_mask`, :func:`magnet_apply`, :func:`siren_apply`, :func:`flex_conv`,
  :func:`spatial_conv`, :func:`fft_conv`, :func:`causal_conv1d`
- Padding Module: :func:`learned_pad`, :func:`padding_loss`, :func:`partial_conv_scale`
"""

from convjax.ops.conv import (
    conv_padding,
    pad_by_mode,
    pad_for_conv,
    padded_conv,
    symmetric_pads,
)
from convjax.ops.deconv import (
    DeconvStats,
    deconv_block_size,
    deconv_conv,
    deconv_conv_eval,
    deconv_conv_train,
    deconv_dense,
    deconv_dense_eval,
    deconv_freeze_schedule,
    deconv_patches,
    deconv_statistics,
    fold_deconv,
    init_deconv_stats,
    isqrt_newton_schulz,
    update_running_stats,
)
from convjax.ops.fft_conv import (
    DEFAULT_FFT_THRESHOLD,
    causal_conv1d,
    conv_valid,
    fft_conv,
    spatial_conv,
)
from convjax.ops.flex_conv import (
    active_bucket,
    flex_conv,
    flex_conv_aliasing_penalty,
    flex_conv_init,
    init_mask,
    resolution_change,
    sample_kernel,
)
from convjax.ops.gaussian_mask import (
    bucket_index,
    crop_support,
    default_buckets,
    gaussian_mask,
    grid_coordinates,
    mask_crop_size,
    positive_sigma,
)
from convjax.ops.layout import conv_dimension_numbers
from convjax.ops.learned_pad import (
    MIXINGS,
    PAD_INITS,
    init_padding_params,
    learned_pad,
    learned_pad_and_loss,
    padding_loss,
)
from convjax.ops.magnet import (
    magnet_aliasing_penalty,
    magnet_apply,
    magnet_init,
)
from convjax.ops.pad import (
    DECONV_PADDING_MODES,
    FLEX_PADDING_MODES,
    PAD_MODES,
    PADDING_MODES,
    PaddingLike,
    PadWidth,
    pad,
)
from convjax.ops.partial_pad import (
    partial_conv_scale,
)
from convjax.ops.siren import (
    siren_apply,
    siren_init,
)
from convjax.ops.soft_pool import (
    soft_pool,
    soft_pool_output_shape,
)

__all__ = [
    "DECONV_PADDING_MODES",
    "DEFAULT_FFT_THRESHOLD",
    "FLEX_PADDING_MODES",
    "PADDING_MODES",
    "PadWidth",
    "PaddingLike",
    "conv_dimension_numbers",
    "conv_padding",
    "pad_by_mode",
    "pad_for_conv",
    "padded_conv",
    "symmetric_pads",
    "DeconvStats",
    "MIXINGS",
    "PAD_INITS",
    "PAD_MODES",
    "active_bucket",
    "bucket_index",
    "causal_conv1d",
    "conv_valid",
    "crop_support",
    "deconv_block_size",
    "deconv_conv",
    "deconv_conv_eval",
    "deconv_conv_train",
    "deconv_dense",
    "deconv_dense_eval",
    "deconv_freeze_schedule",
    "deconv_patches",
    "deconv_statistics",
    "default_buckets",
    "fft_conv",
    "flex_conv",
    "flex_conv_aliasing_penalty",
    "flex_conv_init",
    "fold_deconv",
    "gaussian_mask",
    "grid_coordinates",
    "init_deconv_stats",
    "init_mask",
    "init_padding_params",
    "isqrt_newton_schulz",
    "learned_pad",
    "learned_pad_and_loss",
    "magnet_aliasing_penalty",
    "magnet_apply",
    "magnet_init",
    "mask_crop_size",
    "pad",
    "padding_loss",
    "partial_conv_scale",
    "positive_sigma",
    "resolution_change",
    "sample_kernel",
    "siren_apply",
    "siren_init",
    "soft_pool",
    "soft_pool_output_shape",
    "update_running_stats",
    "spatial_conv",
]
