"""The ENAS macro space (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018;
NNI's ``ENASMacroGeneralModel``), written free-form.

A stem (3x3 conv + BN to ``out_filters`` channels), then ``num_layers`` layers of constant width. Layer ``i``
applies one of six operations (``layer_i``: 3x3 / 5x5 convolution, 3x3 / 5x5 separable convolution, each behind
a 1x1 conv; 3x3 average / max pooling behind a 1x1 conv) to the previous layer's output and, for ``i >= 1``,
adds any subset of the ``i`` states before that one (``skip_i``: input 0 is the stem, input ``j`` layer
``j - 1``; the empty set is allowed), then BatchNorm: ``out = BN(op(prev) + sum(skips))``, as in NNI. After the
pooling layers (NNI's ``[d - 1, 2d - 1]``, ``d = num_layers // 3``; a pool is dropped where the feature map
would fall below ``min_feature_size``) the feature map is halved: the previous layer's output by a
``factorized_reduce`` (channels kept), as in NNI. The head is global average pooling and a linear classifier.

Deliberate deviation: NNI and ENAS also pass every *older* state through the factorized reduction, but such a
reduction only runs if some later layer takes that state as a skip, so its FLOPs depend on the union of several
``skip_*`` decisions, which no per-decision cost table can express (random architectures take nearly every
state somewhere, so a check on them would not even notice: sparse architectures would be mispredicted). Older
states are halved by a parameter-free 3x3 average pooling (stride 2, the same output size) instead, so every
architecture's cost is exactly the fixed part plus one cost per ``layer_i`` and skip connections are free.
"""

from dataclasses import dataclass
from typing import Tuple

from nnabla.core.module import Module

from core.errors import ConfigError
from core.typed import NonNegativeInt, PositiveInt
from search_space.blocks.builder import build_block
from search_space.blocks.cell_ops import pool2d
from search_space.enas.common import ENASHead, downsample_strides, enas_stem
from search_space.layers import ABCModule, BatchNorm2d, ModuleList
from search_space.mutables import InputChoice, LayerChoice
from search_space.searchable import Searchable
from search_space.spec import DataInfo

#: the six operations of a macro layer, in NNI's order: value -> (block, keyword arguments)
MACRO_OPS = {
    "conv_3x3": ("enas_conv_3x3", {}),
    "sep_conv_3x3": ("enas_conv_3x3", {"separable": True}),
    "conv_5x5": ("enas_conv_5x5", {}),
    "sep_conv_5x5": ("enas_conv_5x5", {"separable": True}),
    "avg_pool_3x3": ("enas_avg_pool_3x3", {"macro": True}),
    "max_pool_3x3": ("enas_max_pool_3x3", {"macro": True}),
}


@dataclass(frozen=True)
class ENASMacroParams:
    """Depth and width of the ENAS macro network."""

    #: searchable layers (ENAS: 12 for CIFAR-10)
    num_layers: PositiveInt = 12
    #: channels of the stem and of every layer (constant through the network, as in ENAS)
    out_filters: PositiveInt = 24
    #: layers after which the feature map is halved; null: NNI's ``[d - 1, 2d - 1]`` with ``d = num_layers // 3``
    pool_layers: Tuple[NonNegativeInt, ...] | None = None
    #: a pooling layer halves the feature map only while it stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 2


class ENASMacroLayer(Module):
    """One macro layer: ``BN(op(states[-1]) + sum of the chosen earlier states)``."""

    def __init__(self, index: int, channels: int):
        ops = {name: build_block(block, channels, channels, 1, **kw) for name, (block, kw) in MACRO_OPS.items()}
        self.op = LayerChoice(ops, label=f"layer_{index}")
        if index:
            self.skip = InputChoice(index, n_chosen=None, reduction="sum", label=f"skip_{index}")
        self.bn = BatchNorm2d(channels, affine=False)

    def call(self, states):
        out = self.op(states[-1])
        skip = self.skip(states[:-1]) if "skip" in self.submodules else None
        return self.bn(out if skip is None else out + skip)


class ENASMacroSupernet(Searchable, ABCModule):
    """The ENAS macro search network: every layer holds all six operations and every skip (module docstring)."""

    Params = ENASMacroParams

    def __init__(self, params: ENASMacroParams, data: DataInfo):
        n, c = params.num_layers, params.out_filters
        distance = n // 3
        pools = (distance - 1, 2 * distance - 1) if params.pool_layers is None else params.pool_layers
        bad = [i for i in pools if i >= n]
        if bad:
            raise ConfigError(f"search_space.pool_layers: {bad[0]} is not a layer index (num_layers is {n})")
        strides = downsample_strides(n, pools, data.input_size, params.min_feature_size)
        self.__dict__["strides"] = tuple(strides)
        self.stem = enas_stem(data.in_channels, c)
        self.layers = ModuleList([ENASMacroLayer(i, c) for i in range(n)])
        self.reduce = ModuleList(
            [build_block("factorized_reduce", c, c, 2, affine=False, relu=False) for s in strides if s == 2]
        )
        self.head = ENASHead(c, data.num_classes, relu=False)

    def call(self, x):
        states = [self.stem(x)]
        reductions = iter(self.reduce)
        for layer, stride in zip(self.layers, self.strides):
            states.append(layer(states))
            if stride == 2:  # older states: free average pooling (module docstring); the newest: factorized_reduce
                states = [pool2d(s, "avg", 2) for s in states[:-1]] + [next(reductions)(states[-1])]
        return self.head(states[-1])
