"""Pure, Flax-free operations: jit-, vmap-, grad- and pmap-safe, channels-last.

Each op lives in its own file, named after it. Arguments follow ``flax.linen.max_pool``
conventions (see :mod:`convjax.ops.validation`).
"""

# --- foundation ---------------------------------------------------------------------------
from convjax.ops.pad import PAD_MODES, pad

# --- softpool (issue 3) -------------------------------------------------------------------
from convjax.ops.soft_pool import soft_pool, soft_pool_output_shape

# isort: split
# --- deconv (issue 4) ---------------------------------------------------------------------
from convjax.ops.deconv import (
    DeconvStats,
    deconv_block_size,
    deconv_conv,
    deconv_conv_eval,
    deconv_dense,
    deconv_dense_eval,
    deconv_patches,
    deconv_statistics,
    fold_deconv,
    init_deconv_stats,
    isqrt_newton_schulz,
)

# --- flexconv (issue 5) -------------------------------------------------------------------
# isort: split
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
    default_buckets,
    gaussian_mask,
    grid_coordinates,
    mask_crop_size,
    sigma_from_raw,
)
from convjax.ops.magnet import magnet_aliasing_penalty, magnet_apply, magnet_init
from convjax.ops.siren import siren_apply, siren_init

# isort: split
# --- padding module (issue 6) -------------------------------------------------------------
# isort: split
from convjax.ops.learned_pad import (
    MIXINGS,
    PAD_INITS,
    init_padding_params,
    learned_pad,
    learned_pad_and_loss,
    padding_loss,
)
from convjax.ops.partial_pad import partial_conv_scale
