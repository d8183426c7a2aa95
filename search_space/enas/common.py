"""What the ENAS micro and macro spaces share: the stem, the classifier head and where the feature map is halved."""

from typing import List, Sequence

import nnabla.functions as F
from nnabla.core.module import Module

from search_space.blocks.builder import build_block
from search_space.layers import GlobalAvgPool, Linear
from search_space.spec import reduce_stride


def enas_stem(in_channels: int, channels: int) -> Module:
    """ENAS's stem: a 3x3 convolution (no bias) followed by BatchNorm, no activation."""
    return build_block("conv_bn_act", in_channels, channels, 1, kernel=3, activation="none")


class ENASHead(Module):
    """[ReLU ->] global average pooling -> linear classifier (the micro network applies the ReLU, the macro one not)."""

    def __init__(self, channels: int, num_classes: int, relu: bool):
        self.relu = relu
        self.pool = GlobalAvgPool()
        self.fc = Linear(channels, num_classes)

    def call(self, x):
        return self.fc(self.pool(F.relu(x) if self.relu else x))


def downsample_strides(num_layers: int, pool_layers: Sequence[int], size: int, min_size: int) -> List[int]:
    """The stride (2 or 1) of each of ``num_layers`` positions: 2 at ``pool_layers`` while the feature map of side
    ``size`` stays at least ``min_size`` after halving (so 8x8 inputs work), else 1."""
    strides = []
    for i in range(num_layers):
        stride = reduce_stride(2, size, min_size) if i in pool_layers else 1
        size = (size + stride - 1) // stride
        strides.append(stride)
    return strides
