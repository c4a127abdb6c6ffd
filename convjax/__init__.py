"""convjax: learned padding, SoftPool, Network Deconvolution and FlexConv for JAX/Flax.

Layers (imports only point down): ``convjax.ops`` (pure functions) <- ``convjax.nnx`` /
``convjax.linen`` (Flax modules) <- ``convjax.models``, ``convjax.train``, ``convjax.data``.
Importing ``convjax`` imports only the pure ops; import the other subpackages explicitly.
"""

from convjax import ops

__version__ = "0.1.0"
__all__ = ["ops", "__version__"]
