"""SGNAS supernet (Huang & Chu, "Searching by Generating: Flexible and Efficient One-Shot NAS with Architecture
Generator", CVPR 2021; its unified supernet, the space OSNASLib pairs with its architecture generator), free-form.

First stage: 3x3 conv 32 (stride 2), a fixed MB e1 k3 block to 16 (``spec.mobile_stem``). Search stage: SGNAS's
19 layers, (32, 2, s2), (40, 4, s2), (80, 4, s2), (96, 4, s1), (192, 4, s2), (320, 1, s1), each a
``UnifiedLayer`` of ``expansion`` = 6 groups of ``C_in`` hidden channels; group ``j`` of layer ``i`` is the
decision ``layer_<i>_<j>``: kernel 3, 5 or 7, or ``skip`` (dropped; never for group 0). A layer is thereby an
inverted residual of any expansion 1..6 with kernels mixed over its groups. Last stage: 1x1 conv 1280, global
pooling, classifier. Strides are dropped where the feature map would fall below ``min_feature_size`` (8x8 digits
work). Standalone networks and the lookup table are derived from the supernet (``search_space.freeform``); the
table is exact because every group costs only itself.

Deviations from SGNAS, deliberate: (1) the groups are independent decisions (SGNAS's architecture parameters are
per group too), so uniform sampling draws each group's kernel or drop independently, where SGNAS first draws
the expansion in 2..6 and then which groups run; the space also holds expansion 1, which SGNAS's generator can
decode but its sampler never trains; (2) group order is a label, so architectures that differ only by a
permutation of a layer's groups are distinct (and equally costly) points; (3) no SE / h-swish variant (SGNAS-A/B/C
retrain with them): an SE over the hidden channels would make costs depend on several groups at once.
OSNASLib's own SGNAS config is ProxylessNAS's 21-layer layout: ``stages: [[24, 4, 2], [40, 4, 2], [80, 4, 2],
[96, 4, 1], [192, 4, 2], [320, 1, 1]]``.
"""

from dataclasses import dataclass
from typing import Annotated, Tuple

from core.typed import PositiveFloat, PositiveInt, Probability, Range
from search_space.layers import ABCModule, ModuleList
from search_space.searchable import Searchable
from search_space.sgnas.unified import UnifiedLayer
from search_space.spec import (
    BlockSpec,
    DataInfo,
    LayerSpec,
    check_odd_kernels,
    classifier_head,
    mobile_stem,
    reduce_stride,
    stage_layers,
    width_scaler,
)


@dataclass(frozen=True)
class SGNASParams:
    """Search-space config section: backbone widths/depths, groups per layer and their kernels."""

    width_mult: PositiveFloat = 1.0
    first_channels: PositiveInt = 32
    first_stride: PositiveInt = 2
    first_mb_channels: PositiveInt = 16
    #: (channels, layers, stride) per stage; the default is SGNAS's 19 layers (ImageNet)
    stages: Tuple[Tuple[PositiveInt, PositiveInt, PositiveInt], ...] = (
        (32, 2, 2),
        (40, 4, 2),
        (80, 4, 2),
        (96, 4, 1),
        (192, 4, 2),
        (320, 1, 1),
    )
    last_channels: PositiveInt = 1280
    kernels: Tuple[PositiveInt, ...] = (3, 5, 7)
    #: expansion groups per layer (of the layer's input width each): the largest expansion rate
    expansion: PositiveInt = 6
    #: groups after the first may be dropped (``skip``), so a layer's expansion ranges over 1..expansion
    skip: bool = True
    #: one output BN per number of dropped groups (SGNAS's switchable BN); false: one shared BN
    switchable_bn: bool = True
    activation: str = "relu6"
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    bn_decay: Probability = 0.9
    #: a stride 2 is applied only while the feature map stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 4


def sgnas_stages(
    params: SGNASParams, data: DataInfo
) -> Tuple[Tuple[BlockSpec, ...], Tuple[LayerSpec, ...], Tuple[BlockSpec, ...]]:
    """``(first, search, last)``: the fixed stages as block specs and the searchable layers' shapes."""
    check_odd_kernels("kernels", params.kernels)
    ch = width_scaler(params.width_mult)
    act, bn = params.activation, params.bn_decay
    s0 = reduce_stride(params.first_stride, data.input_size, params.min_feature_size)
    c0, c1 = ch(params.first_channels), ch(params.first_mb_channels)
    first = mobile_stem(data.in_channels, c0, c1, s0, act, bn)
    search, in_ch, _ = stage_layers(params.stages, c1, data.input_size // s0, params.min_feature_size, ch)
    # MobileNetV2's rule, as in ProxylessNAS: the last conv is widened with the network but never narrowed
    last_ch = ch(params.last_channels) if params.width_mult > 1.0 else params.last_channels
    return first, search, classifier_head(in_ch, last_ch, data.num_classes, act, bn, params.dropout)


class SGNASSupernet(Searchable, ABCModule):
    """The SGNAS unified supernet: every layer holds every group's kernels (module docstring)."""

    Params = SGNASParams

    def __init__(self, params: SGNASParams, data: DataInfo):
        first, search, last = sgnas_stages(params, data)
        self.first = ModuleList([b.build() for b in first])
        layer_kw = {
            "kernels": params.kernels,
            "expansion": params.expansion,
            "skip": params.skip,
            "switchable_bn": params.switchable_bn,
            "activation": params.activation,
            "bn_decay": params.bn_decay,
        }
        self.search = ModuleList([UnifiedLayer(layer, **layer_kw) for layer in search])
        self.last = ModuleList([b.build() for b in last])

    def finish_standalone(self) -> None:
        """A standalone network keeps only the switchable BNs its architecture uses."""
        for layer in self.search:
            layer.fix_bn()

    def call(self, x):
        return self.last(self.search(self.first(x)))
