"""FBNet supernet (Wu et al., 2019, Table 1; OSNASLib's FBNet space): macro/micro configs from params and data.

First stage: 3x3 conv 16, stride 2. Search stage: 22 layers in seven stages (16x1 s1, 24x4 s2, 32x4 s2,
64x4 s2, 112x4 s1, 184x4 s2, 352x1 s1), each holding ``k{3,5}_e{1,3,6}``, the grouped ``k{3,5}_e1_g2``
(grouped 1x1 convolutions + channel shuffle) and ``skip`` where the shape is kept. Last stage: 1x1 conv
1984, global pooling, classifier. Strides are dropped where the feature map would fall below
``min_feature_size``: at 224x224 none is, so the paper's network is unchanged, and 8x8 digits or 32x32
CIFAR inputs work. The base classes build the supernet, the standalone model and the lookup table.
"""

from dataclasses import dataclass
from typing import Annotated, Sequence, Tuple

from core.errors import ConfigError
from core.typed import PositiveFloat, PositiveInt, Probability, Range
from search_space.base_supernet import BaseSupernet
from search_space.spec import (
    CandidateSpec,
    DataInfo,
    LayerSpec,
    MacroConfig,
    MicroConfig,
    classifier_head,
    mobile_stem,
    reduce_stride,
    stage_layers,
    width_scaler,
)


@dataclass(frozen=True)
class FBNetParams:
    """Search-space config section: backbone widths/depths and the candidate grid."""

    width_mult: PositiveFloat = 1.0
    first_channels: PositiveInt = 16
    first_stride: PositiveInt = 2
    #: a fixed MB e1 k3 block of this width after the first conv (ProxylessNAS's stem); null = none, as in
    #: FBNet, whose 16-channel layer is the first searchable one
    first_mb_channels: PositiveInt | None = None
    #: (channels, layers, stride) per stage; the default is FBNet's 22-layer search space
    stages: Tuple[Tuple[PositiveInt, PositiveInt, PositiveInt], ...] = (
        (16, 1, 1),
        (24, 4, 2),
        (32, 4, 2),
        (64, 4, 2),
        (112, 4, 1),
        (184, 4, 2),
        (352, 1, 1),
    )
    #: scaled with ``width_mult`` like every other width (FBNet's rule, also below 1.0)
    last_channels: PositiveInt = 1984
    kernels: Tuple[PositiveInt, ...] = (3, 5)
    expansions: Tuple[PositiveInt, ...] = (1, 3, 6)
    #: group counts of the grouped variants ``k<k>_e<e>_g<g>`` (grouped 1x1 convolutions + channel shuffle)
    groups: Tuple[Annotated[int, Range(ge=2)], ...] = (2,)
    #: the expansions that also get grouped variants (FBNet: e1 only)
    grouped_expansions: Tuple[PositiveInt, ...] = (1,)
    skip: bool = True
    activation: str = "relu"
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    bn_decay: Probability = 0.9
    #: a stride 2 is applied only while the feature map stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 4


class FBNetSupernet(BaseSupernet):
    """The FBNet supernet."""

    Params = FBNetParams

    @staticmethod
    def get_model_cfg(params: FBNetParams, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """Stages scaled by ``width_mult``; strides dropped where the input is too small for them."""
        ch = width_scaler(params.width_mult)
        act, bn = params.activation, params.bn_decay
        s0 = reduce_stride(params.first_stride, data.input_size, params.min_feature_size)
        c0 = ch(params.first_channels)
        mb = None if params.first_mb_channels is None else ch(params.first_mb_channels)
        first = mobile_stem(data.in_channels, c0, mb, s0, act, bn)
        search, in_ch, _ = stage_layers(params.stages, mb or c0, data.input_size // s0, params.min_feature_size, ch)
        last = classifier_head(in_ch, ch(params.last_channels), data.num_classes, act, bn, params.dropout)
        micro = []
        for k in params.kernels:
            for e in params.expansions:
                grouped = params.groups if e in params.grouped_expansions else ()
                for g in (1, *grouped):
                    kwargs = {"expansion": e, "kernel": k, "activation": act, "bn_decay": bn, "group": g}
                    micro.append(CandidateSpec(f"k{k}_e{e}" + (f"_g{g}" if g > 1 else ""), "mobile", kwargs))
        if params.skip:
            micro.append(CandidateSpec("skip", "skip"))
        check_groups(micro, search)
        return MacroConfig(first, search, last), tuple(micro)


def check_groups(micro: Sequence[CandidateSpec], search: Sequence[LayerSpec]) -> None:
    """A grouped candidate needs its group to divide the channels of every searchable layer (ConfigError)."""
    for cand in micro:
        g = cand.kwargs.get("group", 1)
        for layer in search:
            hidden = layer.in_channels * cand.kwargs.get("expansion", 1)
            if g > 1 and (layer.in_channels % g or hidden % g or layer.out_channels % g):
                raise ConfigError(
                    f"search_space.groups: {cand.name} needs group {g} to divide the channels of {layer.label} "
                    f"({layer.in_channels}->{layer.out_channels}); use a width_mult / channels divisible by {g}"
                )
