"""``convjax.convert``: switch any plain Flax model to the four methods in one call.

``convjax.convert(model, padding=..., pool=..., norm=..., conv=..., **options)`` returns a
converted copy of an NNX module or a Linen module (the input is never mutated); see
:func:`convert`. The package module itself is callable, so both ``convjax.convert(model, ...)``
and ``from convjax.convert import convert`` work.
"""

from __future__ import annotations

import sys
import types

from convjax.convert.api import convert
from convjax.convert.common import ConversionError
from convjax.convert.linen_model import LinenModel, from_linen
from convjax.convert.pools import intercept_pools
from convjax.convert.report import Change, ConversionReport
from convjax.convert.training import (
    check_optimizers,
    linen_trainable,
    make_optimizers,
)

__all__ = [
    "Change",
    "ConversionError",
    "ConversionReport",
    "LinenModel",
    "check_optimizers",
    "convert",
    "from_linen",
    "intercept_pools",
    "linen_trainable",
    "make_optimizers",
]


class _CallableModule(types.ModuleType):
    """Makes ``convjax.convert(...)`` call :func:`convert` while staying the package."""

    def __call__(self, *args, **kwargs):
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
