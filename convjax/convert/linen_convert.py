"""``convert`` for Flax Linen modules (filled in below)."""
