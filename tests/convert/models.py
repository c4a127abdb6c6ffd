"""Tiny models written the way popular plain Flax code is written (no convjax inside)."""

import functools

import flax.linen as nn
import jax
from flax import nnx


def primitives(fn, *args) -> list[str]:
    """Every primitive name in the jaxpr of ``fn(*args)``, sub-jaxprs included."""
    names: list[str] = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.append(eqn.primitive.name)
            for p in eqn.params.values():
                for sub in p if isinstance(p, (list, tuple)) else (p,):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


def nnx_primitives(model, x) -> list[str]:
    graphdef, state = nnx.split(model)
    return primitives(lambda s, x: nnx.merge(graphdef, s)(x), state, x)


# ----------------------------------------------------------------------------- NNX


class NnxCNN(nnx.Module):
    """nnx.Sequential with a functools.partial pool, a functional pool in __call__, a BN."""

    def __init__(self, rngs: nnx.Rngs, pool_fn=nnx.max_pool, in_features: int = 1):
        self.features = nnx.Sequential(
            nnx.Conv(in_features, 4, (3, 3), padding="SAME", use_bias=False, rngs=rngs),
            nnx.BatchNorm(4, rngs=rngs),
            nnx.relu,
            functools.partial(pool_fn, window_shape=(2, 2), strides=(2, 2)),
            nnx.Conv(4, 8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=rngs),
        )
        self.shortcut = nnx.Conv(in_features, 8, (1, 1), strides=(4, 4), rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)
        self.pool_fn = pool_fn

    def __call__(self, x):
        y = nnx.relu(self.features(x) + self.shortcut(x))
        y = self.pool_fn(y, (2, 2), (2, 2))
        return self.head(y.mean((1, 2)))


class NnxDecoy(nnx.Module):
    """A BatchNorm named like a conv's, fed by a ReLU (not a conv output): must stay."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), use_bias=False, rngs=rngs)
        self.conv_bn = nnx.BatchNorm(4, rngs=rngs)
        self.other = nnx.Conv(4, 4, (3, 3), use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        y = self.conv_bn(nnx.relu(self.conv(x)))  # not a pair: a ReLU in between
        return self.norm(self.other(y))  # a pair, whatever the names


class NnxConvNd(nnx.Module):
    """A conv of any rank (1-D or 3-D) with a BN and a max pool; optional groups."""

    def __init__(self, rngs: nnx.Rngs, ndim: int, groups: int = 1, dilation: int = 1):
        k = (3,) * ndim
        self.conv = nnx.Conv(
            4,
            4,
            k,
            padding="SAME",
            feature_group_count=groups,
            kernel_dilation=dilation,
            use_bias=False,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.ndim = ndim

    def __call__(self, x):
        y = nnx.relu(self.bn(self.conv(x)))
        return nnx.max_pool(y, (2,) * self.ndim, (2,) * self.ndim)


# ----------------------------------------------------------------------------- Linen


class LinenBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool = True):
        s = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False)(x)
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)
        y = nn.relu(y)
        y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1, 1), s, use_bias=False, name="shortcut")(x)
        return nn.relu(y + x)


class LinenResNet(nn.Module):
    """@nn.compact ResNet: explicit padding tuples, BatchNorm, max-pool stem, strided shortcut."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv_init")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = LinenBlock(4)(x, train)
        x = LinenBlock(8, 2)(x, train)
        x = jax.numpy.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


class LinenVGG(nn.Module):
    """setup-style VGG: convs in a list, SAME padding, max pools, no BatchNorm."""

    widths: tuple = (4, 8)
    num_classes: int = 3

    def setup(self):
        self.convs = [nn.Conv(w, (3, 3), padding="SAME") for w in self.widths]
        self.classifier = nn.Dense(self.num_classes)

    def __call__(self, x):
        for conv in self.convs:
            x = nn.max_pool(nn.relu(conv(x)), (2, 2), strides=(2, 2))
        return self.classifier(x.reshape((x.shape[0], -1)))


class LinenConvNd(nn.Module):
    ndim: int = 1
    groups: int = 1

    @nn.compact
    def __call__(self, x, train: bool = True):
        y = nn.Conv(4, (3,) * self.ndim, padding="SAME", feature_group_count=self.groups)(x)
        y = nn.BatchNorm(use_running_average=not train)(y)
        return nn.avg_pool(nn.relu(y), (2,) * self.ndim, (2,) * self.ndim)
