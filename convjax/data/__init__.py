"""convjax.data."""
