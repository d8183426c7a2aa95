"""MobileFaceNet supernet (Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification
on Mobile Devices", 2018; OSNASLib's MobileFaceNet space): macro/micro configs from params and data.

First stage: 3x3 conv 64 stride 2, then a 3x3 depthwise conv 64 (both BN + PReLU). Search stage: the paper's
15 bottlenecks in five stages, (64, 5, s2), (128, 1, s2), (128, 6, s1), (128, 1, s2), (128, 2, s1), each layer
choosing an inverted residual ``k<k>_e<e>`` (OSNASLib's grid: k3/k5 x e1/e2/e4, the paper's e2/e4 among them), a
MixConv bottleneck ``mix_k<k...>_e<e>`` (depthwise kernels mixed over channel groups) or ``skip`` where the shape
is kept. Last stage: 1x1 conv 512 (BN + PReLU), the linear global depthwise conv (GDConv: its kernel is the real
feature-map side, 7x7 at 112x112) + BN, the linear 1x1 conv to the 128-d embedding + BN, and a linear classifier
on the embedding, so the space trains with the classification criteria like every other space (a face
recognition loss such as ArcFace would replace that classifier). PReLU (``activation: prelu``, one slope per
channel) is used throughout, as in the paper. Strides are dropped where the feature map would fall below
``min_feature_size`` (8x8 digits work); the base classes build the supernet, the model and the table.
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
    embedding_head,
    reduce_stride,
    stage_layers,
    width_scaler,
)


@dataclass(frozen=True)
class MobileFaceNetParams:
    """Search-space config section: backbone widths/depths, head widths and the candidate grid."""

    width_mult: PositiveFloat = 1.0
    first_channels: PositiveInt = 64
    first_stride: PositiveInt = 2
    #: (channels, layers, stride) per stage; the default is MobileFaceNet's 15 bottlenecks
    stages: Tuple[Tuple[PositiveInt, PositiveInt, PositiveInt], ...] = (
        (64, 5, 2),
        (128, 1, 2),
        (128, 6, 1),
        (128, 1, 2),
        (128, 2, 1),
    )
    #: the 1x1 conv before GDConv (scaled with ``width_mult``)
    last_channels: PositiveInt = 512
    #: width of the linear embedding the classifier reads (not scaled)
    embedding: PositiveInt = 128
    kernels: Tuple[PositiveInt, ...] = (3, 5)
    expansions: Tuple[PositiveInt, ...] = (1, 2, 4)
    #: kernel sets of the MixConv candidates (empty: none), each crossed with ``mixconv_expansions``
    mixconv_kernels: Tuple[Tuple[PositiveInt, ...], ...] = ((3, 5, 7),)
    mixconv_expansions: Tuple[PositiveInt, ...] = (2, 4)
    skip: bool = True
    activation: str = "prelu"
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    bn_decay: Probability = 0.9
    #: a stride 2 is applied only while the feature map stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 4


class MobileFaceNetSupernet(BaseSupernet):
    """The MobileFaceNet supernet."""

    Params = MobileFaceNetParams

    @staticmethod
    def get_model_cfg(params: MobileFaceNetParams, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """Stages scaled by ``width_mult``; strides dropped where the input is too small; GDConv sized to fit."""
        check_odd_kernels("kernels", params.kernels)
        for kernels in params.mixconv_kernels:
            check_odd_kernels("mixconv_kernels", kernels)
        ch = width_scaler(params.width_mult)
        act, bn = params.activation, params.bn_decay
        s0 = reduce_stride(params.first_stride, data.input_size, params.min_feature_size)
        c0 = ch(params.first_channels)
        first = (
            BlockSpec("conv_bn_act", data.in_channels, c0, s0, {"kernel": 3, "activation": act, "bn_decay": bn}),
            BlockSpec("conv_bn_act", c0, c0, 1, {"kernel": 3, "group": c0, "activation": act, "bn_decay": bn}),
        )
        search, in_ch, size = stage_layers(params.stages, c0, data.input_size // s0, params.min_feature_size, ch)
        last = embedding_head(
            in_ch, ch(params.last_channels), params.embedding, size, data.num_classes, act, bn, params.dropout
        )
        block = {"activation": act, "bn_decay": bn}
        micro = [
            CandidateSpec(f"k{k}_e{e}", "mobile", {"expansion": e, "kernel": k, **block})
            for k in params.kernels
            for e in params.expansions
        ]
        for kernels in params.mixconv_kernels:
            for e in params.mixconv_expansions:
                name = f"mix_k{''.join(map(str, kernels))}_e{e}"
                micro.append(CandidateSpec(name, "mixconv", {"expansion": e, "kernels": tuple(kernels), **block}))
        if params.skip:
            micro.append(CandidateSpec("skip", "skip"))
        return MacroConfig(first, search, last), tuple(micro)
