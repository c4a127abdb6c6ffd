"""Flax NNX modules over :mod:`convjax.ops`."""

# --- softpool (issue 3) -------------------------------------------------------------------
from convjax.nnx.soft_pool import SoftPool

# isort: split
# --- deconv (issue 4) ---------------------------------------------------------------------
from convjax.nnx.deconv import DeconvConv, DeconvDense, DeconvStat

# --- flexconv (issue 5) -------------------------------------------------------------------
# isort: split
from convjax.nnx.flex_conv import (
    CKConv,
    FlexConv,
    MaskParam,
    change_resolution,
    total_aliasing_penalty,
)

# isort: split
# --- padding module and conv wrapper (issue 6) --------------------------------------------
from convjax.nnx.conv import Conv
from convjax.nnx.padding import (
    PADDING_MODES,
    Pad,
    PaddingLoss,
    PaddingModule,
    PadParam,
    pop_padding_losses,
)
