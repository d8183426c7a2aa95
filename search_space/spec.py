"""Plain-data descriptions of a space's structure: macro_cfg (stages) and micro_cfg (candidates)."""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from nnabla.core.module import Module

from core.errors import ConfigError
from search_space.blocks.builder import block_allows, build_block
from search_space.blocks.mobile import make_divisible
from search_space.choices import SearchSpaceChoices


@dataclass(frozen=True)
class DataInfo:
    """What a space needs to know about the data: classes, channels and square input size."""

    num_classes: int
    in_channels: int
    input_size: int


@dataclass(frozen=True)
class BlockSpec:
    """A fixed block of the first/last stage."""

    block_type: str
    in_channels: int
    out_channels: int
    stride: int = 1
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Module:
        """Construct the block."""
        return build_block(self.block_type, self.in_channels, self.out_channels, self.stride, **self.kwargs)


@dataclass(frozen=True)
class LayerSpec:
    """One searchable position of the search stage; ``label`` names its decision."""

    label: str
    in_channels: int
    out_channels: int
    stride: int = 1


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate block that a searchable position may hold; ``name`` is its value in an arch."""

    name: str
    block_type: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def allowed(self, layer: LayerSpec) -> bool:
        """Whether this candidate fits the layer's shape (e.g. skip only where the shape is kept)."""
        return block_allows(self.block_type, layer.in_channels, layer.out_channels, layer.stride)

    def build(self, layer: LayerSpec) -> Module:
        """Construct this candidate at ``layer``."""
        return build_block(self.block_type, layer.in_channels, layer.out_channels, layer.stride, **self.kwargs)


@dataclass(frozen=True)
class MacroConfig:
    """The whole network: fixed ``first`` blocks, searchable ``search`` layers, fixed ``last`` blocks."""

    first: Tuple[BlockSpec, ...]
    search: Tuple[LayerSpec, ...]
    last: Tuple[BlockSpec, ...]


MicroConfig = Tuple[CandidateSpec, ...]


def layer_candidates(layer: LayerSpec, micro_cfg: MicroConfig) -> List[CandidateSpec]:
    """The candidates of ``micro_cfg`` that fit ``layer``, in order."""
    return [c for c in micro_cfg if c.allowed(layer)]


def space_choices(macro_cfg: MacroConfig, micro_cfg: MicroConfig) -> SearchSpaceChoices:
    """The decisions a ``macro_cfg``/``micro_cfg`` pair defines: per layer label, the fitting candidates' names."""
    return SearchSpaceChoices(
        [(layer.label, tuple(c.name for c in layer_candidates(layer, micro_cfg))) for layer in macro_cfg.search]
    )


def candidate_by_name(micro_cfg: MicroConfig) -> Dict[str, CandidateSpec]:
    """``{name: CandidateSpec}`` of a micro config."""
    return {c.name: c for c in micro_cfg}


def reduce_stride(requested: int, size: int, min_size: int) -> int:
    """``requested`` if the feature map stays at least ``min_size`` after it, else 1 (small inputs work)."""
    return requested if requested > 1 and size // requested >= min_size else 1


def width_scaler(width_mult: float) -> Callable[[int], int]:
    """``channels -> make_divisible(channels * width_mult)``: the MobileNet rule for scaled widths."""

    def scale(channels: int) -> int:
        return make_divisible(channels * width_mult)

    return scale


def stage_layers(
    stages: Sequence[Tuple[int, int, int]],
    in_channels: int,
    size: int,
    min_size: int,
    width: Callable[[int], int] = lambda c: c,
) -> Tuple[Tuple[LayerSpec, ...], int, int]:
    """The searchable layers ``layer_0, layer_1, ...`` of ``(channels, layers, stride)`` stages.

    Each stage's stride is on its first layer and is dropped (``reduce_stride``) where the feature map of
    side ``size`` would fall below ``min_size``; channels go through ``width``. Returns
    ``(layers, out_channels, out_size)``.
    """
    search: List[LayerSpec] = []
    for channels, layers, stride in stages:
        out_channels = width(channels)
        for i in range(layers):
            s = reduce_stride(stride, size, min_size) if i == 0 else 1
            size //= s
            search.append(LayerSpec(f"layer_{len(search)}", in_channels, out_channels, s))
            in_channels = out_channels
    return tuple(search), in_channels, size


def mobile_stem(
    in_channels: int, channels: int, mb_channels: int | None, stride: int, activation: str, bn_decay: float
) -> Tuple[BlockSpec, ...]:
    """MobileNetV2-style first stage: 3x3 conv-BN-act (``stride``), then a fixed MB e1 k3 block to
    ``mb_channels`` (none if ``mb_channels`` is None)."""
    conv = BlockSpec(
        "conv_bn_act", in_channels, channels, stride, {"kernel": 3, "activation": activation, "bn_decay": bn_decay}
    )
    if mb_channels is None:
        return (conv,)
    mb_kwargs = {"expansion": 1, "kernel": 3, "activation": activation, "bn_decay": bn_decay}
    return conv, BlockSpec("mobile", channels, mb_channels, 1, mb_kwargs)


def classifier_head(
    in_channels: int, last_channels: int, num_classes: int, activation: str, bn_decay: float, dropout: float = 0.0
) -> Tuple[BlockSpec, ...]:
    """Last stage: 1x1 conv-BN-act to ``last_channels``, global average pooling, linear classifier."""
    return (
        BlockSpec(
            "conv_bn_act", in_channels, last_channels, 1, {"kernel": 1, "activation": activation, "bn_decay": bn_decay}
        ),
        BlockSpec("gap", last_channels, last_channels),
        BlockSpec("linear", last_channels, num_classes, 1, {"dropout": dropout}),
    )


def spatial_sizes(macro_cfg: MacroConfig, input_size: int) -> Tuple[List[int], List[int], List[int]]:
    """Input spatial size of every first, search and last block (same-padding convolutions)."""
    size = input_size
    out: Tuple[List[int], List[int], List[int]] = ([], [], [])
    for specs, sizes in zip((macro_cfg.first, macro_cfg.search, macro_cfg.last), out):
        for spec in specs:
            sizes.append(size)
            size = (size + spec.stride - 1) // spec.stride
    return out


def embedding_head(
    in_channels: int,
    last_channels: int,
    embedding: int,
    feature_size: int,
    num_classes: int,
    activation: str,
    bn_decay: float,
    dropout: float = 0.0,
) -> Tuple[BlockSpec, ...]:
    """MobileFaceNet's last stage: 1x1 conv-BN-act to ``last_channels``; the linear global depthwise convolution
    (GDConv: a ``feature_size`` kernel without padding, so 1x1 out) -> BN; a linear 1x1 conv-BN to the
    ``embedding``; a linear classifier on the embedding."""
    bn = {"bn_decay": bn_decay}
    gdconv = {"kernel": feature_size, "group": last_channels, "pad": 0, "activation": "none", **bn}
    return (
        BlockSpec("conv_bn_act", in_channels, last_channels, 1, {"kernel": 1, "activation": activation, **bn}),
        BlockSpec("conv_bn_act", last_channels, last_channels, 1, gdconv),
        BlockSpec("conv_bn_act", last_channels, embedding, 1, {"kernel": 1, "activation": "none", **bn}),
        BlockSpec("gap", embedding, embedding),
        BlockSpec("linear", embedding, num_classes, 1, {"dropout": dropout}),
    )


def check_odd_kernels(field_name: str, kernels: Sequence[int]) -> None:
    """ConfigError unless every kernel size is odd (same padding keeps the feature map only for odd sizes)."""
    even = [k for k in kernels if k % 2 == 0]
    if even or not kernels:
        got = f"{even[0]}" if even else "none"
        raise ConfigError(f"search_space.{field_name}: kernel sizes must be odd (3, 5, 7...), got {got}")
