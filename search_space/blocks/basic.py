"""Basic blocks: ConvBNAct, Skip, global average pooling and the Linear classifier."""

import nnabla.functions as F
from nnabla.core.module import Module

from core.registries import BLOCKS
from search_space.layers import Activation, BatchNorm2d, Conv2d, GlobalAvgPool, Linear


@BLOCKS.register("conv_bn_act")
class ConvBNAct(Module):
    """Convolution (``pad`` None: same padding) -> batch norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel: int = 3,
        activation: str = "relu6",
        group: int = 1,
        bn_decay: float = 0.9,
        pad: int | None = None,
    ):
        self.conv = Conv2d(in_channels, out_channels, kernel, stride, pad=pad, group=group)
        self.bn = BatchNorm2d(out_channels, decay_rate=bn_decay)
        self.act = Activation(activation, out_channels)

    def call(self, x):
        return self.act(self.bn(self.conv(x)))


@BLOCKS.register("skip")
class Skip(Module):
    """Identity: lets a search drop a layer where the shape is kept."""

    shape_preserving = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **_unused):
        self.channels = in_channels

    def call(self, x):
        return x


@BLOCKS.register("gap")
class GAP(Module):
    """Global average pooling to (N, C)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        if in_channels != out_channels:
            raise TypeError(f"gap keeps channels, got {in_channels}->{out_channels}")
        self.pool = GlobalAvgPool()

    def call(self, x):
        return self.pool(x)


@BLOCKS.register("linear")
class LinearBlock(Module):
    """Fully connected classifier head (with optional dropout while training)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0):
        self.fc = Linear(in_channels, out_channels)
        self.dropout = dropout

    def call(self, x):
        if self.training and self.dropout > 0:
            x = F.dropout(x, self.dropout)
        return self.fc(x)
