"""The values of the four switches every convjax model, :func:`convjax.convert` and the trainer
share (``--config.padding/pool/norm/conv``): one vocabulary, defined once, below the layers that
use it (no Flax here).

* ``padding``: :data:`PADDING_MODES` (:func:`convjax.ops.pad`; FlexConv takes
  :data:`FLEX_PADDING_MODES`);
* ``pool``: :data:`POOL_TYPES` (max, average, SoftPool of Stergiou et al. 2021);
* ``norm``: :data:`NORM_TYPES` (BatchNorm, Network Deconvolution of Ye et al. 2020, none);
* ``conv``: :data:`CONV_TYPES` (fixed kernels, FlexConv of Romero et al. 2022).

Example:
  >>> from convjax.switches import POOL_TYPES
  >>> POOL_TYPES
  ('max', 'avg', 'soft')
"""

from __future__ import annotations

from convjax.ops.pad import FLEX_PADDING_MODES, PADDING_MODES

POOL_TYPES: tuple[str, ...] = ("max", "avg", "soft")
NORM_TYPES: tuple[str, ...] = ("batch", "deconv", "none")
CONV_TYPES: tuple[str, ...] = ("standard", "flex")

__all__ = ["CONV_TYPES", "FLEX_PADDING_MODES", "NORM_TYPES", "PADDING_MODES", "POOL_TYPES"]
