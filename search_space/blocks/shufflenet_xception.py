"""ShuffleNetV2 Xception unit, SPOS's fourth choice (``Shuffle_Xception``): ``shufflenet_xception``.

The ``ShuffleUnit`` frame of ``shufflenet`` (split form at stride 1, two branches otherwise, concatenation and
channel shuffle) around a right branch of three depthwise-separable convolutions: [depthwise kxk -> BN,
1x1 -> BN -> act] three times, the first depthwise one with the stride. ``kernel`` is 3 in SPOS.
"""

from core.registries import BLOCKS
from search_space.blocks.shufflenet import ShuffleUnit, _conv


@BLOCKS.register("shufflenet_xception")
class ShuffleXceptionBlock(ShuffleUnit):
    """ShuffleNetV2 unit whose branch is three depthwise-separable kxk convolutions (SPOS ``xception``)."""

    def branch(self, cin: int, mid: int, cout: int, kernel: int, stride: int, activation: str, bn_decay: float):
        """[dw kxk -> BN, 1x1 -> BN -> act] x 3: ``cin -> mid -> mid -> cout``, the stride on the first."""
        layers = []
        for i, (a, b) in enumerate(((cin, mid), (mid, mid), (mid, cout))):
            layers.append(_conv(a, a, kernel, stride if i == 0 else 1, "none", bn_decay, depthwise=True))
            layers.append(_conv(a, b, 1, 1, activation, bn_decay))
        return layers
