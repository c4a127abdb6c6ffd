"""convjax: learned padding, SoftPool, Network Deconvolution and FlexConv for JAX/Flax.

Layers (imports only point down): ``convjax.ops`` (pure functions) <- ``convjax.nnx`` /
``convjax.linen`` (Flax modules) <- ``convjax.models``, ``convjax.train``, ``convjax.data``.
Importing ``convjax`` imports only the pure ops; import the other subpackages explicitly.
``convjax.convert(model, ...)`` (switch a plain Flax model to the methods) is loaded on first use.
"""

from convjax import ops

__version__ = "0.1.0"
__all__ = ["convert", "ops", "__version__"]


def __getattr__(name: str):
    if name == "convert":  # lazy: it imports Flax; the package module itself is callable
        import importlib

        return importlib.import_module("convjax.convert")
    raise AttributeError(f"module 'convjax' has no attribute {name!r}")
