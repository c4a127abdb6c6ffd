"""A user's own models for ``--config.model=tests.convert.user_models:<factory>``: plain Flax NNX
(nnx.Conv, nnx.BatchNorm, pools as function calls) and plain Linen (an ``@nn.compact`` ResNet,
a ``setup``-style VGG), nothing from convjax."""

from flax import nnx


class UserCNN(nnx.Module):
    def __init__(self, *, num_classes, in_features, width, rngs):
        self.conv1 = nnx.Conv(in_features, width, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, rngs=rngs)
        self.conv2 = nnx.Conv(width, width, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        self.bn2 = nnx.BatchNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.avg_pool(x, (2, 2), (2, 2))  # the user's choice: average pooling
        x = nnx.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(axis=(1, 2)))


def make_cnn(*, num_classes, in_features, rngs, width=4):
    """The trainer's factory contract: keywords ``num_classes``, ``in_features``, ``rngs``."""
    return UserCNN(num_classes=num_classes, in_features=in_features, width=width, rngs=rngs)


def make_linen_resnet(*, num_classes, in_features, rngs):
    """A Linen factory: returns the (uninitialised) module; ``rngs`` is unused."""
    from tests.convert.models import LinenResNet

    return LinenResNet(num_classes=num_classes)


def make_linen_vgg(*, num_classes, in_features, rngs, widths=(4, 8)):
    from tests.convert.models import LinenVGG

    return LinenVGG(widths=tuple(widths), num_classes=num_classes)


NOT_CALLABLE = 3
