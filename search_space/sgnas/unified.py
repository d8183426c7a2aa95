"""SGNAS's unified layer: an inverted residual whose hidden channels are ``expansion`` groups that each choose a
depthwise kernel, or to be dropped.

Group ``j`` is ``1x1 (C_in -> C_in) -> BN -> act -> depthwise kxk (stride) -> BN -> act -> 1x1 (C_in -> C_out)``;
the layer is ``BN(sum of its groups) [+ x]``. That is exactly an inverted residual of expansion ``e`` (the
groups kept) whose depthwise layer mixes kernels per group of ``C_in`` channels (a ``mixconv`` with SGNAS's
split): the expansion and projection convolutions are the groups' slices, and the projection of a concatenation
is the sum of the projections. A dropped group computes zeros, so each decision costs exactly its own group and
the lookup table is additive. Group 0 is never dropped (SGNAS's static layers: no layer disappears), so the
expansion of a layer ranges over 1..``expansion``.

The BN after the sum is switchable (SGNAS, after Yu et al.'s switchable BN): one BN per number of dropped groups,
so networks of different widths do not share output statistics. Sample and max modes use the BN of the active
path; full and gates modes (every group weighted) use the BN of the full width. A standalone network keeps only
its own BN (``fix_bn``).
"""

from typing import Sequence

import numpy as np
from nnabla.core.module import Module

from search_space.blocks.builder import build_block
from search_space.blocks.cell_ops import Zero
from search_space.layers import BatchNorm2d, Conv2d, ModuleList
from search_space.mutables import LayerChoice
from search_space.spec import LayerSpec

SKIP = "skip"


class DroppedGroup(Zero):
    """A dropped expansion group: zeros of the layer's output shape (a real option: derivation may choose it)."""

    is_zero = False


def expansion_group(cin: int, cout: int, stride: int, kernel: int, activation: str, bn_decay: float) -> Module:
    """One expansion group: 1x1 ``cin -> cin`` -> BN -> act, depthwise kxk (stride) -> BN -> act, 1x1 ``-> cout``."""
    kw = {"activation": activation, "bn_decay": bn_decay}
    return ModuleList(
        [
            build_block("conv_bn_act", cin, cin, 1, kernel=1, **kw),
            build_block("conv_bn_act", cin, cin, stride, kernel=kernel, group=cin, **kw),
            Conv2d(cin, cout, 1),
        ]
    )


def dropped_groups(choices: Sequence[LayerChoice]) -> int | None:
    """How many groups the active path drops (sample / max mode), or None when groups are weighted (full / gates)."""
    dropped = 0
    for choice in choices:
        d = choice.decision
        if d.mode == "sample":
            value = d.value
        elif d.mode == "max":
            value = d.choice.values[int(np.argmax(d.probabilities()))]
        else:
            return None
        dropped += value == SKIP
    return dropped


class UnifiedLayer(Module):
    """One searchable SGNAS layer: ``expansion`` labelled group choices (``<label>_<j>``) and a switchable BN."""

    def __init__(
        self,
        layer: LayerSpec,
        kernels: Sequence[int],
        expansion: int,
        skip: bool = True,
        switchable_bn: bool = True,
        activation: str = "relu6",
        bn_decay: float = 0.9,
    ):
        cin, cout, stride = layer.in_channels, layer.out_channels, layer.stride
        self.use_residual = stride == 1 and cin == cout
        choices = []
        for j in range(expansion):
            options = {f"k{k}": expansion_group(cin, cout, stride, k, activation, bn_decay) for k in kernels}
            if skip and j > 0:
                options[SKIP] = DroppedGroup(cin, cout, stride)
            choices.append(LayerChoice(options, label=f"{layer.label}_{j}"))
        self.groups = ModuleList(choices)
        self.__dict__["choices"] = tuple(choices)  # plain references for the BN switch (no Module method calls)
        n_bn = expansion if switchable_bn and skip and expansion > 1 else 1
        # residual layers start as the identity (zero-initialised BN scale), as the ``mobile`` block does
        self.sbn = ModuleList([BatchNorm2d(cout, bn_decay, zero_gamma=self.use_residual) for _ in range(n_bn)])

    def bn_index(self) -> int:
        """Index of the BN the active path uses."""
        if len(self.sbn) == 1:
            return 0
        return dropped_groups(self.choices) or 0

    def fix_bn(self) -> None:
        """Keep only the BN of the active path (the standalone network of one architecture)."""
        self.sbn = ModuleList([self.sbn[self.bn_index()]])

    def call(self, x):
        y = self.groups[0](x)
        for group in list(self.groups)[1:]:
            y = y + group(x)
        y = self.sbn[self.bn_index()](y)
        return x + y if self.use_residual else y
