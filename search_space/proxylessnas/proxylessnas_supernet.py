"""ProxylessNAS supernet: macro_cfg/micro_cfg from params and data; the base class does the rest."""

from dataclasses import dataclass
from typing import Annotated, Tuple

from core.typed import PositiveFloat, PositiveInt, Probability, Range
from search_space.base_supernet import BaseSupernet
from search_space.spec import (
    CandidateSpec,
    DataInfo,
    MacroConfig,
    MicroConfig,
    classifier_head,
    mobile_stem,
    reduce_stride,
    stage_layers,
    width_scaler,
)


@dataclass(frozen=True)
class ProxylessNASParams:
    """Search-space config section: backbone widths/depths and candidate grid."""

    width_mult: PositiveFloat = 1.0
    first_channels: PositiveInt = 32
    first_stride: PositiveInt = 1
    first_mb_channels: PositiveInt = 16
    #: (channels, layers, stride) per stage; the default is ProxylessNAS's CIFAR backbone
    stages: Tuple[Tuple[PositiveInt, PositiveInt, PositiveInt], ...] = (
        (24, 4, 1),
        (40, 4, 2),
        (80, 4, 2),
        (96, 4, 1),
        (192, 4, 2),
        (320, 1, 1),
    )
    last_channels: PositiveInt = 1280
    expansions: Tuple[PositiveInt, ...] = (3, 6)
    kernels: Tuple[PositiveInt, ...] = (3, 5, 7)
    skip: bool = True
    se: bool = False
    activation: str = "relu6"
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    bn_decay: Probability = 0.9
    #: a stride-2 is applied only while the feature map stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 4


class ProxylessNASSupernet(BaseSupernet):
    """The ProxylessNAS supernet."""

    Params = ProxylessNASParams

    @staticmethod
    def get_model_cfg(params: ProxylessNASParams, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """Stages scaled by ``width_mult``; strides dropped where the input is too small for them."""
        ch = width_scaler(params.width_mult)
        act, bn = params.activation, params.bn_decay
        s0 = reduce_stride(params.first_stride, data.input_size, params.min_feature_size)
        c0, c1 = ch(params.first_channels), ch(params.first_mb_channels)
        first = mobile_stem(data.in_channels, c0, c1, s0, act, bn)
        search, in_ch, _ = stage_layers(params.stages, c1, data.input_size // s0, params.min_feature_size, ch)
        # MobileNetV2's rule: the last conv is widened with the network but never narrowed
        last_ch = ch(params.last_channels) if params.width_mult > 1.0 else params.last_channels
        last = classifier_head(in_ch, last_ch, data.num_classes, act, bn, params.dropout)
        micro = [
            CandidateSpec(
                f"MB{e}_K{k}",
                "mobile",
                {"expansion": e, "kernel": k, "activation": act, "se": params.se, "bn_decay": bn},
            )
            for e in params.expansions
            for k in params.kernels
        ]
        if params.skip:
            micro.append(CandidateSpec("skip", "skip"))
        return MacroConfig(first, search, last), tuple(micro)
