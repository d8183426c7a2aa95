"""MobileNetV2 inverted residual block (expansion, kernel, stride, activation, optional SE, FBNet groups)."""

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


def channel_shuffle(x, group: int):
    """ShuffleNet channel shuffle: channel ``j`` of group ``i`` (of ``group``) moves to position ``j * group + i``."""
    if group == 1:
        return x
    n, c, h, w = x.shape
    x = F.reshape(x, (n, group, c // group, h, w))
    return F.reshape(F.transpose(x, (0, 2, 1, 3, 4)), (n, c, h, w))


@BLOCKS.register("mobile")
class InvertedResidual(Module):
    """1x1 expand -> kxk depthwise (stride) -> [SE] -> 1x1 project; residual when shapes match.

    ``group > 1`` is FBNet's grouped variant (``k3_e1_g2`` ...): both 1x1 convolutions are grouped and the
    channels are shuffled after the expansion. As in FBNet, the expansion then exists even at ``expansion=1``
    (a single grouped 1x1 without a shuffle would keep the groups apart through the whole network).
    ``group=1`` is the plain block, with the same parameters and names.
    """

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
        group: int = 1,
    ):
        hidden = int(round(in_channels * expansion))
        if group < 1 or in_channels % group or hidden % group or out_channels % group:
            raise TypeError(f"group {group} must divide the channels {in_channels}->{hidden}->{out_channels}")
        self.use_residual = stride == 1 and in_channels == out_channels
        self.group = group
        self.has_expand = expansion != 1 or group > 1
        if self.has_expand:
            self.expand = Conv2d(in_channels, hidden, 1, group=group)
            self.expand_bn = BatchNorm2d(hidden, bn_decay)
            self.expand_act = Activation(activation, hidden)
        self.dw = Conv2d(hidden, hidden, kernel, stride, group=hidden)
        self.dw_bn = BatchNorm2d(hidden, bn_decay)
        self.dw_act = Activation(activation, hidden)
        self.se = SqueezeExcite(hidden) if se else Identity()
        self.project = Conv2d(hidden, out_channels, 1, group=group)
        # a residual block starts as the identity (zero-initialised last BN scale): deep nets and
        # randomly sampled supernet paths train from a stable start
        self.project_bn = BatchNorm2d(out_channels, bn_decay, zero_gamma=self.use_residual)

    def call(self, x):
        h = x
        if self.has_expand:
            h = channel_shuffle(self.expand_act(self.expand_bn(self.expand(h))), self.group)
        h = self.dw_act(self.dw_bn(self.dw(h)))
        h = self.project_bn(self.project(self.se(h)))
        return x + h if self.use_residual else h
