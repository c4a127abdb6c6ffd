"""convjax.bench."""
