"""convjax.models."""
