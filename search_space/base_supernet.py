"""Supernet and superlayer bases: mechanism only (set_active, arch params); policies live elsewhere."""

import abc
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import nnabla as nn
import nnabla.initializer as I
from nnabla.core.module import Module
from nnabla.parameter import get_parameter_or_create

from core.errors import ArchitectureError
from search_space.choices import Arch, Categorical, SearchSpaceChoices
from search_space.layers import ABCModule, ModuleList
from search_space.spec import CandidateSpec, DataInfo, LayerSpec, MacroConfig, MicroConfig, layer_candidates

SHARED_GROUP = "shared"


class BaseSuperlayer(ABCModule):
    """One searchable position holding its candidates; exactly one (``active_index``) runs in sample mode."""

    def __init__(self, layer: LayerSpec, candidates: Sequence[CandidateSpec]):
        self.label = layer.label
        self.layer = layer
        self.candidate_names: List[str] = [c.name for c in candidates]
        if not self.candidate_names:
            raise ArchitectureError(f"layer {layer.label!r} has no candidate that fits its shape")
        self.candidates = ModuleList(self._construct_candidates(layer, candidates))
        self.active_index = 0
        self.has_arch_param = False

    @abc.abstractmethod
    def _construct_candidates(self, layer: LayerSpec, candidates: Sequence[CandidateSpec]) -> List[Module]:
        """Build one module per candidate (in order)."""

    @classmethod
    def build_standalone(cls, layer: LayerSpec, candidate: CandidateSpec) -> Module:
        """The module this superlayer runs for ``candidate`` at ``layer``, alone (what a Model holds).

        Models and lookup tables build candidates through this, so a custom ``_construct_candidates``
        is what the retrained network and the cost table see too.
        """
        return cls(layer, [candidate]).candidates[0]

    def choice(self) -> Categorical:
        """This position's decision."""
        return Categorical(tuple(self.candidate_names))

    def set_active(self, index: int) -> None:
        """Route the forward pass through candidate ``index`` only."""
        if not 0 <= index < len(self.candidate_names):
            raise ArchitectureError(f"layer {self.label!r}: candidate index {index} out of range")
        self.active_index = index

    def initialize_arch_param(self) -> nn.Variable:
        """Create (once) this layer's architecture logits ``alpha`` (one per candidate), owned by it."""
        self.has_arch_param = True
        return get_parameter_or_create("alpha", (len(self.candidate_names),), I.ConstantInitializer(0.0))

    def arch_parameter(self) -> nn.Variable:
        """The ``alpha`` logits (call ``initialize_arch_param`` first)."""
        if not self.has_arch_param:
            raise ArchitectureError(f"layer {self.label!r} has no architecture parameter yet")
        return get_parameter_or_create("alpha", (len(self.candidate_names),), None)

    def candidate_parameters(self, index: int) -> "OrderedDict[str, nn.Variable]":
        """Trainable weights of candidate ``index``."""
        return self.candidates[index].get_parameters(grad_only=True)

    def call(self, x):
        return self.candidates[self.active_index](x)


class Superlayer(BaseSuperlayer):
    """The default superlayer: each candidate is its own block built by the block builder."""

    def _construct_candidates(self, layer: LayerSpec, candidates: Sequence[CandidateSpec]) -> List[Module]:
        return [c.build(layer) for c in candidates]


class BaseSupernet(ABCModule):
    """A supernet built from ``macro_cfg`` (first/search/last) and ``micro_cfg`` (candidates).

    Subclasses give ``get_model_cfg``; everything else (construction, choices, path switching,
    parameter ownership) is shared by every space.
    """

    superlayer_builder = Superlayer

    def __init__(self, params: Any, data: DataInfo):
        self.params = params
        self.data = data
        self.macro_cfg, self.micro_cfg = self.get_model_cfg(params, data)
        self.first = ModuleList([b.build() for b in self.macro_cfg.first])
        self.search = ModuleList(
            [self.superlayer_builder(layer, layer_candidates(layer, self.micro_cfg)) for layer in self.macro_cfg.search]
        )
        self.last = ModuleList([b.build() for b in self.macro_cfg.last])
        self._choices = SearchSpaceChoices([(s.label, s.choice()) for s in self.superlayers()])

    @staticmethod
    @abc.abstractmethod
    def get_model_cfg(params: Any, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """Return ``(macro_cfg, micro_cfg)`` of the space for these params and data."""

    def superlayers(self) -> List[BaseSuperlayer]:
        """The searchable positions, in order."""
        return list(self.search)

    def choices(self) -> SearchSpaceChoices:
        """The space's decisions as plain data (layers sharing a label share a decision)."""
        return self._choices

    def set_active(self, arch: Mapping[str, Any]) -> None:
        """Select the single path ``arch``."""
        arch = self._choices.validate(arch)
        for s in self.superlayers():
            s.set_active(s.candidate_names.index(arch[s.label]))

    def active_arch(self) -> Arch:
        """The architecture of the currently active path."""
        return {s.label: s.candidate_names[s.active_index] for s in self.superlayers()}

    def arch_parameters(self) -> "OrderedDict[str, nn.Variable]":
        """``{label: alpha}`` gathered from the superlayers that own them (shared labels once)."""
        out: OrderedDict[str, nn.Variable] = OrderedDict()
        for s in self.superlayers():
            if s.has_arch_param and s.label not in out:
                out[s.label] = s.arch_parameter()
        return out

    def weight_groups(self) -> "OrderedDict[str, OrderedDict[str, nn.Variable]]":
        """Trainable weights partitioned into ``shared`` and one group per (layer, candidate).

        Optimizers keep one state per group, so a candidate that is not on the path is neither
        decayed nor moved by stale momentum.
        """
        all_params = self.get_parameters(grad_only=True)
        owner: Dict[int, str] = {}
        for i, s in enumerate(self.superlayers()):
            for c in range(len(s.candidate_names)):
                for v in s.candidate_parameters(c).values():
                    owner[id(v)] = self.group_name(i, c)
        arch_ids = {id(v) for v in self.arch_parameters().values()}
        groups: OrderedDict[str, OrderedDict[str, nn.Variable]] = OrderedDict()
        groups[SHARED_GROUP] = OrderedDict()
        for name, v in all_params.items():
            if id(v) in arch_ids:
                continue
            groups.setdefault(owner.get(id(v), SHARED_GROUP), OrderedDict())[name] = v
        return groups

    def weight_parameters(self) -> "OrderedDict[str, nn.Variable]":
        """Every trainable weight (no architecture parameter)."""
        out: OrderedDict[str, nn.Variable] = OrderedDict()
        for g in self.weight_groups().values():
            out.update(g)
        return out

    def active_groups(self) -> List[str]:
        """Names of the weight groups on the active path."""
        return [SHARED_GROUP] + [self.group_name(i, s.active_index) for i, s in enumerate(self.superlayers())]

    @staticmethod
    def group_name(layer_index: int, candidate_index: int) -> str:
        """Weight-group name of one candidate at one position."""
        return f"search/{layer_index}/{candidate_index}"

    def call(self, x):
        return self.last(self.search(self.first(x)))
