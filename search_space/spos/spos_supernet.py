"""SPOS supernet (Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform Sampling", ECCV 2020;
OSNASLib's SPOS space): macro/micro configs from params and data.

First stage: 3x3 conv 16, stride 2. Search stage: 20 ShuffleNetV2 units in four stages (64x4, 160x4, 320x8,
640x4), each stage's first unit with stride 2, each unit one of ``shuffle_k3`` / ``shuffle_k5`` / ``shuffle_k7``
(``shufflenet`` with that depthwise kernel) or ``xception`` (``shufflenet_xception``). Last stage: 1x1 conv 1024,
global pooling, dropout 0.1, classifier. Strides are dropped where the feature map would fall below
``min_feature_size``: at 224x224 none is (7x7 at the end, as in the paper), so 8x8 digits and 32x32 CIFAR
work. A unit whose stride was dropped but which widens uses ShuffleNet's two-branch form at stride 1.
SPOS's channel-number search is not part of this space; ``width_mult`` scales every width (multiples of 8,
so every unit splits and shuffles evenly). The base classes build the supernet, the model and the table.
"""

from dataclasses import dataclass
from typing import Annotated, Tuple

from core.typed import PositiveFloat, PositiveInt, Probability, Range
from search_space.base_supernet import BaseSupernet
from search_space.spec import (
    BlockSpec,
    CandidateSpec,
    DataInfo,
    MacroConfig,
    MicroConfig,
    check_odd_kernels,
    classifier_head,
    reduce_stride,
    stage_layers,
    width_scaler,
)


@dataclass(frozen=True)
class SPOSParams:
    """Search-space config section: backbone widths/depths and the candidate units."""

    width_mult: PositiveFloat = 1.0
    first_channels: PositiveInt = 16
    first_stride: PositiveInt = 2
    #: (channels, layers, stride) per stage; the default is SPOS's 20-layer ShuffleNetV2 supernet
    stages: Tuple[Tuple[PositiveInt, PositiveInt, PositiveInt], ...] = (
        (64, 4, 2),
        (160, 4, 2),
        (320, 8, 2),
        (640, 4, 2),
    )
    last_channels: PositiveInt = 1024
    #: depthwise kernels of the ``shuffle_k<k>`` candidates
    kernels: Tuple[PositiveInt, ...] = (3, 5, 7)
    #: offer the Xception unit (three depthwise-separable 3x3 convolutions) too
    xception: bool = True
    activation: str = "relu"
    #: before the classifier (SPOS: 0.1)
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1
    bn_decay: Probability = 0.9
    #: a stride 2 is applied only while the feature map stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 4


class SPOSSupernet(BaseSupernet):
    """The SPOS ShuffleNetV2 supernet."""

    Params = SPOSParams

    @staticmethod
    def get_model_cfg(params: SPOSParams, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """Stages scaled by ``width_mult``; strides dropped where the input is too small for them."""
        check_odd_kernels("kernels", params.kernels)
        ch = width_scaler(params.width_mult)
        act, bn = params.activation, params.bn_decay
        s0 = reduce_stride(params.first_stride, data.input_size, params.min_feature_size)
        c0 = ch(params.first_channels)
        stem = {"kernel": 3, "activation": act, "bn_decay": bn}
        first = (BlockSpec("conv_bn_act", data.in_channels, c0, s0, stem),)
        search, in_ch, _ = stage_layers(params.stages, c0, data.input_size // s0, params.min_feature_size, ch)
        last = classifier_head(in_ch, ch(params.last_channels), data.num_classes, act, bn, params.dropout)
        unit = {"activation": act, "bn_decay": bn}
        micro = [CandidateSpec(f"shuffle_k{k}", "shufflenet", {"kernel": k, **unit}) for k in params.kernels]
        if params.xception:
            micro.append(CandidateSpec("xception", "shufflenet_xception", {"kernel": 3, **unit}))
        return MacroConfig(first, search, last), tuple(micro)
