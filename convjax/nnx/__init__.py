"""Flax NNX modules over :mod:`convjax.ops`: parameters and statistics live here."""

from convjax.nnx.conv import (
    Conv,
)
from convjax.nnx.deconv import (
    DeconvConv,
    DeconvDense,
    DeconvStat,
)
from convjax.nnx.flex_conv import (
    CKConv,
    FlexConv,
    MaskParam,
    change_resolution,
    total_aliasing_penalty,
)
from convjax.nnx.padding import (
    Pad,
    PaddingLoss,
    PaddingModule,
    PadParam,
    pop_padding_losses,
)
from convjax.nnx.soft_pool import (
    Pool,
    SoftPool,
)
from convjax.ops.pad import PADDING_MODES  # re-exported: the one definition

__all__ = [
    "CKConv",
    "Conv",
    "DeconvConv",
    "DeconvDense",
    "DeconvStat",
    "FlexConv",
    "MaskParam",
    "PADDING_MODES",
    "Pad",
    "PadParam",
    "PaddingLoss",
    "PaddingModule",
    "Pool",
    "SoftPool",
    "change_resolution",
    "pop_padding_losses",
    "total_aliasing_penalty",
]
