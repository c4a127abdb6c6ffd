"""The main job with every CPU-friendly switch of the four methods: learned padding and
SoftPool on the 8x8 digits (runs in about a minute on a 2-core CPU).

    convjax train --config=digits_learned_pad
"""

from __future__ import annotations

import ml_collections

from convjax.configs.default import base_config


def get_config() -> ml_collections.ConfigDict:
    """digits_cnn with ``padding="learned"`` and ``pool="soft"``; otherwise the default."""
    c = base_config()
    c.workdir = "runs/digits_learned_pad"
    c.padding = "learned"
    c.pool = "soft"
    return c
