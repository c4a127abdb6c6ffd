"""Flax Linen modules over :mod:`convjax.ops`, for Linen codebases."""

from convjax.linen.conv import (
    Conv,
)
from convjax.linen.deconv import (
    DeconvConv,
    DeconvDense,
)
from convjax.linen.flex_conv import (
    CKConv,
    FlexConv,
)
from convjax.linen.padding import (
    LOSSES_COLLECTION,
    PADDING_COLLECTION,
    Pad,
    PaddingModule,
    sum_padding_losses,
)
from convjax.linen.soft_pool import (
    SoftPool,
)
from convjax.ops.pad import PADDING_MODES  # re-exported: the one definition

__all__ = [
    "CKConv",
    "Conv",
    "DeconvConv",
    "DeconvDense",
    "FlexConv",
    "LOSSES_COLLECTION",
    "PADDING_COLLECTION",
    "PADDING_MODES",
    "Pad",
    "PaddingModule",
    "SoftPool",
    "sum_padding_losses",
]
