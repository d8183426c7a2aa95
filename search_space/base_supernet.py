"""Supernet and superlayer bases of macro/micro spaces: mechanism only; policies live elsewhere.

A superlayer is a LayerChoice built from specs (one searchable position of the OSNASLib macro config), so
chain spaces and free-form networks with LayerChoice / InputChoice share one mutable mechanism.
"""

import abc
from collections import OrderedDict
from typing import Any, List, Sequence, Tuple

import nnabla as nn
from nnabla.core.module import Module

from core.errors import ArchitectureError
from search_space.layers import ABCModule, ModuleABCMeta, ModuleList
from search_space.mutables import LayerChoice
from search_space.searchable import SHARED_GROUP, Searchable
from search_space.spec import CandidateSpec, DataInfo, LayerSpec, MacroConfig, MicroConfig, layer_candidates

__all__ = ["SHARED_GROUP", "BaseSuperlayer", "Superlayer", "BaseSupernet"]


class BaseSuperlayer(LayerChoice, metaclass=ModuleABCMeta):
    """One searchable position holding its candidates (a LayerChoice labelled by the layer's label)."""

    def __init__(self, layer: LayerSpec, candidates: Sequence[CandidateSpec]):
        self.__dict__["layer"] = layer
        if not candidates:
            raise ArchitectureError(f"layer {layer.label!r} has no candidate that fits its shape")
        modules = self._construct_candidates(layer, candidates)
        super().__init__(OrderedDict((c.name, m) for c, m in zip(candidates, modules)), label=layer.label)

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

    @property
    def active_index(self) -> int:
        """Index of the candidate sample mode computes."""
        return self.decision.index

    def set_active(self, index: int) -> None:
        """Route the forward pass through candidate ``index`` only."""
        if not 0 <= index < len(self.candidate_names):
            raise ArchitectureError(f"layer {self.decision.label!r}: candidate index {index} out of range")
        self.decision.index = index

    def candidate_parameters(self, index: int) -> "OrderedDict[str, nn.Variable]":
        """Trainable weights of candidate ``index``."""
        return self.candidates[index].get_parameters(grad_only=True)


class Superlayer(BaseSuperlayer):
    """The default superlayer: each candidate is its own block built by the block builder."""

    def _construct_candidates(self, layer: LayerSpec, candidates: Sequence[CandidateSpec]) -> List[Module]:
        return [c.build(layer) for c in candidates]


class BaseSupernet(Searchable, ABCModule):
    """A supernet built from ``macro_cfg`` (first/search/last) and ``micro_cfg`` (candidates).

    Subclasses give ``get_model_cfg``; everything else (construction, choices, path switching,
    arch parameters, weight groups) comes from ``Searchable`` and is shared by every space.
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

    @staticmethod
    @abc.abstractmethod
    def get_model_cfg(params: Any, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """Return ``(macro_cfg, micro_cfg)`` of the space for these params and data."""

    def superlayers(self) -> List[BaseSuperlayer]:
        """The searchable positions of the search stage, in order."""
        return list(self.search)

    def call(self, x):
        return self.last(self.search(self.first(x)))
