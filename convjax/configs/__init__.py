"""convjax.configs."""
