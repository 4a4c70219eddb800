"""Small image classifiers for 8x8 digits with a pluggable norm-activation layer.

Every norm-activation site calls ``layer(channels)``, so a candidate layer replaces
all of them at once (as in the EvoNorms search). Three architectures, so that a layer
must work across residual, depthwise and plain convolutional networks.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

LayerFactory = Callable[[int], nn.Module]


class ResidualBlock(nn.Module):
    """``x + layer(conv(layer(conv(x))))``."""

    def __init__(self, channels: int, layer: LayerFactory):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), layer(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), layer(channels))

    def forward(self, x):
        return x + self.body(x)


def resnet(layer: LayerFactory, width: int = 16, classes: int = 10) -> nn.Module:
    """Stem, a residual block, a strided transition, one more block, pooled head."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), layer(width),
        ResidualBlock(width, layer),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), layer(2 * width),
        ResidualBlock(2 * width, layer),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


def _separable(c_in: int, c_out: int, stride: int, layer: LayerFactory) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
            layer(c_in), nn.Conv2d(c_in, c_out, 1, bias=False), layer(c_out)]


def mobilenet(layer: LayerFactory, width: int = 16, classes: int = 10) -> nn.Module:
    """MobileNet-v1 style: depthwise 3x3 then pointwise 1x1, each followed by the layer."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), layer(width),
        *_separable(width, 2 * width, 1, layer),
        *_separable(2 * width, 2 * width, 2, layer),
        *_separable(2 * width, 4 * width, 1, layer),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes))


def plain(layer: LayerFactory, width: int = 16, classes: int = 10) -> nn.Module:
    """Three 3x3 convolutions, each followed by the layer, one max-pool, linear head."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), layer(width),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), layer(2 * width),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), layer(2 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet": resnet, "mobilenet": mobilenet, "plain": plain}
