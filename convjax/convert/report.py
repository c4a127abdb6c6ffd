"""What :func:`convjax.convert` changed: one line per layer, counts and parameters added."""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class Change:
    """One layer (or pooling call) ``path``: what it was, what it became.

    ``after`` starting with ``"kept"`` means the layer was looked at and left as it is (the
    reason follows); ``"removed"`` means it is gone from the program (a BatchNorm folded into
    a deconvolution conv).
    """

    path: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.path}: {self.before} -> {self.after}"


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """The changes of one :func:`convjax.convert` call; ``print(report)`` lists them.

    Attributes:
      switches: the switches given (``{"padding": "learned", ...}``, unset ones left out).
      changes: one :class:`Change` per layer path or pooling call, in model order.
      params_added: ``{variable kind: number of scalars}`` the converted model has and the
        original did not (e.g. ``{"PadParam": 156}`` or, for Linen, ``{"padding": 156}``).
      params_removed: the same for variables the original had and the converted one has not
        (BatchNorm scales and shifts with ``norm="deconv"``, kernels replaced by FlexConv).

    Example:
      >>> from convjax.convert import convert
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> class CNN(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
      ...         self.conv2 = nnx.Conv(8, 10, (3, 3), rngs=rngs)
      ...     def __call__(self, x):
      ...         x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
      ...         return self.conv2(x).mean(axis=(1, 2))
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> model, report = convert(CNN(rngs=nnx.Rngs(0)), padding="learned", return_report=True)
      >>> print(report)
      convjax.convert(padding='learned')
        conv1: nnx.Conv(3x3 zero) -> Conv(3x3 learned)
        conv2: nnx.Conv(3x3 zero) -> Conv(3x3 learned)
        2 converted
        parameters added: PadParam: 77, PaddingLoss: 2
      >>> report.counts()
      {'converted': 2}
    """

    switches: dict
    changes: tuple[Change, ...]
    params_added: dict
    params_removed: dict

    def counts(self) -> dict[str, int]:
        """``{"converted": n, "removed": n, "kept": n}`` (only the non-zero ones)."""
        out: collections.Counter = collections.Counter()
        for c in self.changes:
            kind = c.after.split(" ", 1)[0].rstrip(":")
            out["kept" if kind == "kept" else "removed" if kind == "removed" else "converted"] += 1
        return dict(out)

    def paths(self, kind: str = "converted") -> list[str]:
        """Paths whose change is of ``kind`` (``"converted"``, ``"removed"`` or ``"kept"``)."""
        keep = []
        for c in self.changes:
            first = c.after.split(" ", 1)[0].rstrip(":")
            k = first if first in ("kept", "removed") else "converted"
            if k == kind:
                keep.append(c.path)
        return keep

    def __str__(self) -> str:
        head = ", ".join(f"{k}={v!r}" for k, v in self.switches.items()) or "no switches"
        lines = [f"convjax.convert({head})"]
        lines += [f"  {c}" for c in self.changes]
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items()) or "nothing"
        lines.append(f"  {counts}")
        if self.params_added:
            added = ", ".join(f"{k}: {v}" for k, v in sorted(self.params_added.items()))
            lines.append(f"  parameters added: {added}")
        if self.params_removed:
            gone = ", ".join(f"{k}: {v}" for k, v in sorted(self.params_removed.items()))
            lines.append(f"  parameters removed: {gone}")
        return "\n".join(lines)
