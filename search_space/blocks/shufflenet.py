"""ShuffleNetV2 unit (Ma et al. 2018) as SPOS searches it (Guo et al. 2020): ``shufflenet`` with kernel 3/5/7.

The frame, ``ShuffleUnit``, is shared with the Xception variant (``shufflenet_xception``):

- *split* form (stride 1, ``in == out``): the first half of the channels passes unchanged, the second half goes
  through the branch; the halves are concatenated and the channels shuffled (two groups).
- *two-branch* form (stride 2, or ``in != out``): both branches read the whole input. The left one (depthwise
  kxk with the stride, BN, 1x1, BN, ReLU) keeps the input width and the right one outputs ``out - in`` channels,
  as SPOS and OSNASLib's SPOS space do; where the unit does not widen (``out <= in``) each branch gives half of
  the output, like ShuffleNetV2's own downsampling unit. A stride-1 unit that changes the width (a stage whose
  stride was dropped for a small input) uses this form at stride 1.

The right branch's hidden width is ``out // 2`` (SPOS's ``mid_channels``). Output channels must be even.
"""

import nnabla.functions as F
from nnabla.core.module import Module

from core.registries import BLOCKS
from search_space.blocks.basic import ConvBNAct
from search_space.blocks.mobile import channel_shuffle
from search_space.layers import ModuleList


def _conv(cin: int, cout: int, kernel: int, stride: int, activation: str, bn_decay: float, depthwise: bool = False):
    """kxk convolution (depthwise if asked) -> BN -> activation, the unit's only layer type."""
    group = cin if depthwise else 1
    return ConvBNAct(cin, cout, stride, kernel, activation, group, bn_decay)


def shuffle_split(in_channels: int, out_channels: int, stride: int) -> tuple[int, int, bool]:
    """``(left channels, right branch input channels, split form?)`` of a unit ``in -> out`` at ``stride``."""
    if out_channels % 2:
        raise TypeError(f"a ShuffleNet unit needs an even number of output channels, got {out_channels}")
    if stride == 1 and in_channels == out_channels:
        return out_channels // 2, in_channels // 2, True
    left = in_channels if in_channels < out_channels else out_channels // 2
    return left, in_channels, False


class ShuffleUnit(Module):
    """The ShuffleNetV2 frame around a right branch built by ``branch`` (module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel: int = 3,
        activation: str = "relu",
        bn_decay: float = 0.9,
    ):
        if stride not in (1, 2):
            raise TypeError(f"a ShuffleNet unit has stride 1 or 2, got {stride}")
        left, branch_in, self.split = shuffle_split(in_channels, out_channels, stride)
        self.left_channels = left
        if not self.split:
            self.left = ModuleList(
                [
                    _conv(in_channels, in_channels, kernel, stride, "none", bn_decay, depthwise=True),
                    _conv(in_channels, left, 1, 1, activation, bn_decay),
                ]
            )
        mid = out_channels // 2
        self.right = ModuleList(self.branch(branch_in, mid, out_channels - left, kernel, stride, activation, bn_decay))

    def branch(self, cin: int, mid: int, cout: int, kernel: int, stride: int, activation: str, bn_decay: float):
        """ShuffleNetV2's branch: 1x1 -> BN -> act, depthwise kxk (stride) -> BN, 1x1 -> BN -> act."""
        return [
            _conv(cin, mid, 1, 1, activation, bn_decay),
            _conv(mid, mid, kernel, stride, "none", bn_decay, depthwise=True),
            _conv(mid, cout, 1, 1, activation, bn_decay),
        ]

    def call(self, x):
        if self.split:
            c, h, w = x.shape[1:]
            # slice the channel axis only: a slice of the batch axis would pin the exported NNP's batch size
            kept = F.slice(x, (0, 0, 0), (self.left_channels, h, w), (1, 1, 1))
            y = F.concatenate(kept, self.right(F.slice(x, (self.left_channels, 0, 0), (c, h, w), (1, 1, 1))), axis=1)
        else:
            y = F.concatenate(self.left(x), self.right(x), axis=1)
        return channel_shuffle(y, 2)


@BLOCKS.register("shufflenet")
class ShuffleNetBlock(ShuffleUnit):
    """ShuffleNetV2 unit with a kxk depthwise convolution (SPOS ``Shufflenet``; ``kernel`` 3, 5 or 7)."""
