"""The ENAS micro (cell) space (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML
2018; NNI's ``ENASMicroLayer`` / ``MicroNetwork``), written free-form.

A stem (3x3 conv + BN to ``3 * out_channels``), then ``num_layers + 2`` cell layers; the ones at NNI's
``[d, 2d + 1]`` (``d = num_layers // 3``) are reduction layers, which double the channels and halve the feature
map (unless it would fall below ``min_feature_size``). A cell takes the outputs of the two previous layers; a
normal cell calibrates them to its width (a 1x1 ``enas_std_conv`` where the channels differ), a reduction cell
reduces both with ``factorized_reduce`` first, so every operation inside runs at stride 1 (NNI's v1 design), and
passes its reduced previous input on as the next layer's previous-previous one. The cell then builds
``num_nodes`` nodes: node ``j`` has two branches, each an ``InputChoice`` of one of the ``2 + j`` earlier
states (the two cell inputs, then the nodes) and a ``LayerChoice`` over 3x3 / 5x5 separable convolution, 3x3
average / max pooling and identity applied to it; the node is the sum of its branches. The head is ReLU, global
average pooling and a linear classifier.

Labels are shared by every cell of a type (``normal_node{j}_in{b}`` / ``normal_node{j}_op{b}``, and
``reduce_...``): one normal and one reduction cell are searched, as in ENAS; more layers add no decision.

Deliberate deviation: ENAS's cell output concatenates only its "loose ends" (the states no node takes), so the
cost of the output convolution depends on which states the nodes reuse, which no per-decision cost table can
express (and an unused cell input would drop its calibration from the network). Here the cell concatenates ALL
its states, the two calibrated inputs and every node (NNI's output convolution has ``num_nodes + 2`` input slots
for the same reason), and brings them back to the cell width with ReLU -> 1x1 conv -> BN as NNI does. Every
state is then always read and the cost of an architecture is exactly the fixed part plus one cost per
(label, value).
"""

from dataclasses import dataclass

import nnabla.functions as F
from nnabla.core.module import Module

from core.typed import PositiveInt
from search_space.blocks.builder import build_block
from search_space.enas.common import ENASHead, downsample_strides, enas_stem
from search_space.layers import ABCModule, Identity, ModuleList
from search_space.mutables import InputChoice, LayerChoice
from search_space.searchable import Searchable
from search_space.spec import DataInfo

#: the five operations of a branch, in NNI's order: value -> block (None: identity)
MICRO_OPS = {
    "sep_conv_3x3": "enas_sep_conv_3x3",
    "sep_conv_5x5": "enas_sep_conv_5x5",
    "avg_pool_3x3": "enas_avg_pool_3x3",
    "max_pool_3x3": "enas_max_pool_3x3",
    "identity": None,
}


@dataclass(frozen=True)
class ENASMicroParams:
    """Depth and width of the ENAS micro network."""

    #: normal cell layers; two reduction layers are added at 1/3 and 2/3 of the depth (ENAS search: 6)
    num_layers: PositiveInt = 6
    #: intermediate nodes per cell (ENAS: 5)
    num_nodes: PositiveInt = 5
    #: channels of the first cells (the stem has three times as many); doubled by each reduction layer
    out_channels: PositiveInt = 20
    #: a reduction layer halves the feature map only while it stays at least this large (8x8 inputs work)
    min_feature_size: PositiveInt = 2


class ENASMicroBranch(Module):
    """Branch ``b`` of a node: the chosen earlier state through the chosen operation."""

    def __init__(self, node: str, b: int, n_states: int, channels: int):
        self.input = InputChoice(n_states, n_chosen=1, reduction="sum", label=f"{node}_in{b}")
        ops = {name: build_block(op, channels, channels) if op else Identity() for name, op in MICRO_OPS.items()}
        self.op = LayerChoice(ops, label=f"{node}_op{b}")

    def call(self, states):
        return self.op(self.input(states))


class ENASMicroNode(Module):
    """Node ``index`` of a cell: the sum of its two branches over the ``2 + index`` earlier states."""

    def __init__(self, kind: str, index: int, channels: int):
        node = f"{kind}_node{index}"
        self.branches = ModuleList([ENASMicroBranch(node, b, 2 + index, channels) for b in range(2)])

    def call(self, states):
        x, y = (branch(states) for branch in self.branches)
        return x + y


def _preprocess(in_channels: int, channels: int, stride: int, reduction: bool) -> Module:
    """A reduction cell's ``factorized_reduce`` (also at stride 1 where the map is too small to halve), else the
    calibration of a normal cell's input: a 1x1 ``enas_std_conv`` where the channels differ."""
    if reduction:
        return build_block("factorized_reduce", in_channels, channels, stride, affine=False, relu=False)
    return build_block("enas_std_conv", in_channels, channels) if in_channels != channels else Identity()


class ENASMicroCell(Module):
    """One cell layer (normal or reduction); returns ``(the next layer's previous-previous input, output)``."""

    def __init__(self, p: ENASMicroParams, c_pp: int, c_p: int, c: int, reduction: bool, stride: int):
        kind = "reduce" if reduction else "normal"
        self.reduction = reduction
        self.preproc0 = _preprocess(c_pp, c, stride, reduction)
        self.preproc1 = _preprocess(c_p, c, stride, reduction)
        self.nodes = ModuleList([ENASMicroNode(kind, j, c) for j in range(p.num_nodes)])
        self.merge = build_block("relu_conv_bn", (p.num_nodes + 2) * c, c, affine=False)

    def call(self, s0, s1):
        states = [self.preproc0(s0), self.preproc1(s1)]
        for node in self.nodes:
            states.append(node(states))
        out = self.merge(F.concatenate(*states, axis=1))  # every state: see the module docstring
        return (states[1] if self.reduction else s1), out


class ENASMicroSupernet(Searchable, ABCModule):
    """The ENAS micro search network: every branch holds every input and operation (see the module docstring)."""

    Params = ENASMicroParams

    def __init__(self, params: ENASMicroParams, data: DataInfo):
        n = params.num_layers + 2
        distance = params.num_layers // 3
        pools = (distance, 2 * distance + 1)
        strides = downsample_strides(n, pools, data.input_size, params.min_feature_size)
        c = params.out_channels
        c_pp = c_p = 3 * c
        self.stem = enas_stem(data.in_channels, c_p)
        self.cells = ModuleList()
        for i in range(n):
            reduction = i in pools
            c = 2 * c if reduction else c
            self.cells.append(ENASMicroCell(params, c_pp, c_p, c, reduction, strides[i]))
            c_pp, c_p = (c if reduction else c_p), c
        self.head = ENASHead(c, data.num_classes, relu=True)

    def call(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = cell(s0, s1)
        return self.head(s1)
