"""Pure, Flax-free operations: jit-, vmap-, grad- and pmap-safe, channels-last.

Each op lives in its own file, named after it. Arguments follow ``flax.linen.max_pool``
conventions (see :mod:`convjax.ops.validation`).
"""

# --- foundation ---------------------------------------------------------------------------
from convjax.ops.pad import PAD_MODES, pad

# --- softpool (issue 3) -------------------------------------------------------------------
# --- deconv (issue 4) ---------------------------------------------------------------------
# --- flexconv (issue 5) -------------------------------------------------------------------
# --- padding module (issue 6) -------------------------------------------------------------
from convjax.ops.partial_pad import partial_conv_scale
