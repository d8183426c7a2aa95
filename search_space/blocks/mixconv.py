"""MixConv inverted residual (Tan & Le, "MixConv: Mixed Depthwise Convolutional Kernels", BMVC 2019; OSNASLib's
``mixconv`` block): ``mixconv``.

1x1 expansion -> BN -> act, then a depthwise layer whose channels are split into ``len(kernels)`` groups, group
``i`` convolved with a ``kernels[i]`` x ``kernels[i]`` kernel (the stride on every group), concatenated -> BN ->
act, [SE], 1x1 projection -> BN; residual where the shape is kept. Channels are split as in MixNet: equal
groups, the remainder added to the first. ``expansion=1`` has no expansion convolution, as in ``mobile``.
"""

from typing import List, Sequence

import nnabla.functions as F
from nnabla.core.module import Module

from core.registries import BLOCKS
from search_space.blocks.mobile import SqueezeExcite
from search_space.layers import Activation, BatchNorm2d, Conv2d, Identity, ModuleList


def split_channels(channels: int, groups: int) -> List[int]:
    """MixNet's split of ``channels`` into ``groups``: equal parts, the remainder added to the first."""
    split = [channels // groups] * groups
    split[0] += channels - sum(split)
    return split


class MixedDepthwise(Module):
    """Depthwise convolution with one kernel size per channel group (the groups concatenated in order)."""

    def __init__(self, channels: int, kernels: Sequence[int], stride: int = 1):
        self.splits = split_channels(channels, len(kernels))
        if min(self.splits) < 1:
            raise TypeError(f"mixconv: {channels} channels cannot be split into {len(kernels)} kernel groups")
        self.convs = ModuleList([Conv2d(c, c, k, stride, group=c) for c, k in zip(self.splits, kernels)])

    def call(self, x):
        if len(self.splits) == 1:
            return self.convs[0](x)
        h, w = x.shape[2:]
        outs, start = [], 0
        for c, conv in zip(self.splits, self.convs):
            # the channel axis only: slicing the batch axis would pin the exported NNP's batch size
            outs.append(conv(F.slice(x, (start, 0, 0), (start + c, h, w), (1, 1, 1))))
            start += c
        return F.concatenate(*outs, axis=1)


@BLOCKS.register("mixconv")
class MixConvBlock(Module):
    """Inverted residual whose depthwise layer mixes kernel sizes over channel groups (MixNet's MixConv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: int = 6,
        kernels: Sequence[int] = (3, 5, 7),
        activation: str = "relu6",
        se: bool = False,
        bn_decay: float = 0.9,
    ):
        kernels = tuple(int(k) for k in kernels)
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise TypeError(f"mixconv kernels must be odd sizes >= 1, got {kernels}")
        hidden = int(round(in_channels * expansion))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.has_expand = expansion != 1
        if self.has_expand:
            self.expand = Conv2d(in_channels, hidden, 1)
            self.expand_bn = BatchNorm2d(hidden, bn_decay)
            self.expand_act = Activation(activation, hidden)
        self.dw = MixedDepthwise(hidden, kernels, stride)
        self.dw_bn = BatchNorm2d(hidden, bn_decay)
        self.dw_act = Activation(activation, hidden)
        self.se = SqueezeExcite(hidden) if se else Identity()
        self.project = Conv2d(hidden, out_channels, 1)
        # zero-initialised last BN scale on residual blocks, as in ``mobile``: each starts as the identity
        self.project_bn = BatchNorm2d(out_channels, bn_decay, zero_gamma=self.use_residual)

    def call(self, x):
        h = self.expand_act(self.expand_bn(self.expand(x))) if self.has_expand else x
        h = self.dw_act(self.dw_bn(self.dw(h)))
        h = self.project_bn(self.project(self.se(h)))
        return x + h if self.use_residual else h
