"""MobileNetV2 inverted residual block (expansion, kernel, stride, activation, optional SE)."""

import nnabla.functions as F
from nnabla.core.module import Module

from core.registries import BLOCKS
from search_space.layers import Activation, BatchNorm2d, Conv2d, Identity


def make_divisible(v: float, divisor: int = 8, min_value: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going 10 % below ``v``."""
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcite(Module):
    """Squeeze-and-excitation: channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4):
        hidden = max(8, channels // reduction)
        self.reduce = Conv2d(channels, hidden, 1, with_bias=True)
        self.expand = Conv2d(hidden, channels, 1, with_bias=True)

    def call(self, x):
        s = F.mean(x, axis=(2, 3), keepdims=True)
        s = F.relu(self.reduce(s))
        s = F.hard_sigmoid(self.expand(s))
        return x * s


@BLOCKS.register("mobile")
class InvertedResidual(Module):
    """1x1 expand -> kxk depthwise (stride) -> [SE] -> 1x1 project; residual when shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: int = 6,
        kernel: int = 3,
        activation: str = "relu6",
        se: bool = False,
        bn_decay: float = 0.9,
    ):
        hidden = int(round(in_channels * expansion))
        self.use_residual = stride == 1 and in_channels == out_channels
        if expansion != 1:
            self.expand = Conv2d(in_channels, hidden, 1)
            self.expand_bn = BatchNorm2d(hidden, bn_decay)
            self.expand_act = Activation(activation)
        self.has_expand = expansion != 1
        self.dw = Conv2d(hidden, hidden, kernel, stride, group=hidden)
        self.dw_bn = BatchNorm2d(hidden, bn_decay)
        self.dw_act = Activation(activation)
        self.se = SqueezeExcite(hidden) if se else Identity()
        self.project = Conv2d(hidden, out_channels, 1)
        # a residual block starts as the identity (zero-initialised last BN scale): deep nets and
        # randomly sampled supernet paths train from a stable start
        self.project_bn = BatchNorm2d(out_channels, bn_decay, zero_gamma=self.use_residual)

    def call(self, x):
        h = x
        if self.has_expand:
            h = self.expand_act(self.expand_bn(self.expand(h)))
        h = self.dw_act(self.dw_bn(self.dw(h)))
        h = self.project_bn(self.project(self.se(h)))
        return x + h if self.use_residual else h
