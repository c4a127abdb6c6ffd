"""Flax Linen modules over :mod:`convjax.ops`, for Linen codebases."""

# --- softpool (issue 3) -------------------------------------------------------------------
from convjax.linen.soft_pool import SoftPool

# isort: split
# --- deconv (issue 4) ---------------------------------------------------------------------
from convjax.linen.deconv import DeconvConv, DeconvDense

# isort: split
# --- flexconv (issue 5) -------------------------------------------------------------------
# isort: split
from convjax.linen.flex_conv import CKConv, FlexConv

# isort: split
# --- padding module and conv wrapper (issue 6) --------------------------------------------
# isort: split
from convjax.linen.conv import Conv
from convjax.linen.padding import (
    LOSSES_COLLECTION,
    PADDING_COLLECTION,
    PADDING_MODES,
    Pad,
    PaddingModule,
    sum_padding_losses,
)
