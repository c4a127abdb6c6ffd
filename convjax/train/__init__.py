"""convjax.train."""
