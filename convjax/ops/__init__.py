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
