"""The DARTS cell space (Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019; NNI's ``DartsCell``).

A stem, then ``layers`` cells; the cells at 1/3 and 2/3 of the depth are reduction cells (stride 2, channels
doubled). A cell takes the outputs of the two previous cells, preprocesses them to ``C`` channels, and builds
``nodes`` intermediate nodes: node ``i`` has one edge from each of its ``2 + i`` earlier states, every edge a
``LayerChoice`` over ``ops`` (stride 2 on the cell inputs of a reduction cell), and an
``InputChoice(2 + i, n_chosen=2, reduction="sum")`` keeps two of its incoming edges. The cell's output is the
concatenation of its nodes. Labels are shared by every cell of a type (``normal_*`` / ``reduce_*``): one normal
and one reduction cell are searched, as in the paper.

Everything else is derived by the framework: the standalone network of a genotype keeps each node's two chosen
edges with their chosen operation (unchosen edges and Zero ops leave the network), the lookup table counts an
edge only while its node takes it (a ``GatedCost``), and a differentiable search keeps, per node, the two edges
whose strongest non-Zero operation (times the learned edge weight) is largest.

Retraining options (standalone networks only): ``drop_path_prob`` (each edge's output other than identity
dropped per sample with a probability rising linearly from 0 to ``drop_path_prob`` over the epochs) and
``auxiliary_weight`` (an auxiliary classifier after the second reduction cell whose cross-entropy is added
with this weight during training). Operations use BatchNorm without affine parameters in search and retrain.
"""

from dataclasses import dataclass
from typing import Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.core.module import Module

from core.errors import ConfigError
from core.registries import BLOCKS
from core.typed import NonNegativeFloat, PositiveInt, Probability
from search_space.blocks.builder import build_block
from search_space.blocks.cell_ops import SkipConnect
from search_space.layers import ABCModule, BatchNorm2d, Conv2d, GlobalAvgPool, Identity, Linear, ModuleList
from search_space.mutables import InputChoice, LayerChoice
from search_space.searchable import Searchable
from search_space.spec import DataInfo

#: the operations of the DARTS paper, in NNI's order
DARTS_OPS = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "zero",
)


@dataclass(frozen=True)
class DARTSParams:
    """Size of the DARTS network and its retraining options."""

    #: channels of the first cells (the stem has ``stem_multiplier`` times as many); doubled at each reduction
    init_channels: PositiveInt = 16
    #: cells; the ones at 1/3 and 2/3 of the depth are reduction cells
    layers: PositiveInt = 8
    #: intermediate nodes per cell (each keeps two incoming edges)
    nodes: PositiveInt = 4
    #: stem width as a multiple of ``init_channels``
    stem_multiplier: PositiveInt = 3
    #: candidate operations of every edge (blocks)
    ops: Tuple[str, ...] = DARTS_OPS
    #: retraining: drop-path probability reached at the last epoch (rises linearly from 0)
    drop_path_prob: Probability = 0.0
    #: retraining: weight of the auxiliary head's cross-entropy (0: no auxiliary head)
    auxiliary_weight: NonNegativeFloat = 0.0


class DropPath(Module):
    """Zeroes whole samples with probability ``rate`` (training only) and rescales the rest by ``1 / (1 - rate)``.

    ``rate`` is a Variable set by the training schedule, so the graph need not change when it does.
    """

    def __init__(self, rate: nn.Variable):
        self.__dict__["rate"] = rate

    def call(self, x):
        if not self.training:
            return x
        keep = F.r_sub_scalar(F.reshape(self.rate, (1, 1, 1, 1)), 1.0)
        mask = F.greater_equal(keep, F.rand(0.0, 1.0, (x.shape[0], 1, 1, 1)))
        return x * (mask / keep)


class AuxiliaryHead(Module):
    """DARTS's auxiliary classifier: ReLU, 5x5 average pooling (stride 3), 1x1 conv 128, conv 768, linear.

    On feature maps smaller than 5x5 the pooling covers the whole map.
    """

    def __init__(self, channels: int, size: int, num_classes: int):
        self.kernel = min(5, size)
        self.stride = 3 if size >= 5 else 1
        pooled = (size - self.kernel) // self.stride + 1
        self.conv1 = Conv2d(channels, 128, 1)
        self.bn1 = BatchNorm2d(128)
        self.conv2 = Conv2d(128, 768, pooled, pad=0)
        self.bn2 = BatchNorm2d(768)
        self.fc = Linear(768, num_classes)

    def call(self, x):
        x = F.average_pooling(F.relu(x), (self.kernel,) * 2, (self.stride,) * 2, ignore_border=True)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.reshape(x, (x.shape[0], -1)))


class Cell(Module):
    """One DARTS cell; ``kind`` (normal | reduce) names its decisions, shared with every cell of that kind."""

    def __init__(self, p: DARTSParams, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        kind = "reduce" if reduction else "normal"
        if reduction_prev:
            self.preproc0 = build_block("factorized_reduce", c_pp, c, 2, affine=False)
        else:
            self.preproc0 = build_block("relu_conv_bn", c_pp, c, affine=False)
        self.preproc1 = build_block("relu_conv_bn", c_p, c, affine=False)
        self.edges = ModuleList()
        self.inputs = ModuleList()
        for i in range(p.nodes):
            edges = ModuleList()
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                ops = {op: build_block(op, c, c, stride, affine=False) for op in p.ops}
                edges.append(LayerChoice(ops, label=f"{kind}_n{i}_e{j}"))
            self.edges.append(edges)
            self.inputs.append(InputChoice(2 + i, n_chosen=2, reduction="sum", label=f"{kind}_n{i}_in"))
        self.drop_paths = ModuleList()

    def call(self, s0, s1):
        states = [self.preproc0(s0), self.preproc1(s1)]
        for edges, choice in zip(self.edges, self.inputs):
            outs = [edge(h) for edge, h in zip(edges, states)]
            if len(self.drop_paths):
                outs = [self.drop_paths[0](y) if _droppable(e) else y for e, y in zip(edges, outs)]
            states.append(choice(outs))
        return F.concatenate(*states[2:], axis=1)


def _droppable(edge: LayerChoice) -> bool:
    """Drop-path applies to every chosen operation but the identity (as in DARTS)."""
    op = edge.candidates[0]
    return not (isinstance(op, SkipConnect) and isinstance(op.op, Identity))


class DARTSSupernet(Searchable, ABCModule):
    """The DARTS search network: every edge holds every operation (see the module docstring)."""

    Params = DARTSParams

    def __init__(self, params: DARTSParams, data: DataInfo):
        unknown = [op for op in params.ops if op not in BLOCKS]
        if unknown or not params.ops:
            raise ConfigError(
                f"search_space.ops: {unknown[0] if unknown else 'empty'!r} is not a block; valid: "
                f"{', '.join(sorted(BLOCKS.names()))}"
            )
        self.__dict__["params"], self.__dict__["data"] = params, data
        c = params.init_channels
        c_stem = params.stem_multiplier * c
        self.stem = build_block("conv_bn_act", data.in_channels, c_stem, 1, kernel=3, activation="none")
        self.cells = ModuleList()
        c_pp, c_p, size, reduction_prev = c_stem, c_stem, data.input_size, False
        self.__dict__["aux_index"] = 2 * params.layers // 3
        for i in range(params.layers):
            reduction = i in (params.layers // 3, 2 * params.layers // 3)
            if reduction:
                c *= 2
                size = (size + 1) // 2
            self.cells.append(Cell(params, c_pp, c_p, c, reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, params.nodes * c, reduction
            if i == self.aux_index:
                self.__dict__["aux_shape"] = (c_p, size)
        self.pool = GlobalAvgPool()
        self.classifier = Linear(c_p, data.num_classes)
        self.__dict__["auxiliary"] = None

    def finish_standalone(self) -> None:
        """Retraining options, added once the network is a standalone one (see ``freeform.standalone``)."""
        p = self.params
        if p.drop_path_prob > 0:
            rate = nn.Variable.from_numpy_array(np.zeros((), np.float32), need_grad=False)
            for cell in self.cells:
                cell.drop_paths.append(DropPath(rate))
            self.__dict__["schedule"] = DropPathSchedule(rate, p.drop_path_prob)
        if p.auxiliary_weight > 0:
            self.aux_head = AuxiliaryHead(*self.aux_shape, self.data.num_classes)

    def call(self, x):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index and self.training and "aux_head" in self.submodules:
                aux = self.aux_head(s1)
        self.__dict__["auxiliary"] = None if aux is None else (self.params.auxiliary_weight, aux)
        return self.classifier(self.pool(s1))


class DropPathSchedule:
    """Sets the drop-path rate from the training progress (``epoch / epochs``): DARTS's linear ramp."""

    def __init__(self, rate: nn.Variable, final: float):
        self.rate, self.final = rate, final

    def __call__(self, progress: float) -> None:
        self.rate.d = self.final * progress
