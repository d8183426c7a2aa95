"""The standalone network of one architecture: only the chosen blocks exist (what is retrained/exported)."""

from typing import Any, Mapping, Type

from nnabla.core.module import Module

from core.errors import ArchitectureError
from search_space.base_supernet import BaseSuperlayer, Superlayer
from search_space.choices import Arch
from search_space.layers import ABCModule, ModuleList
from search_space.spec import (
    CandidateSpec,
    LayerSpec,
    MacroConfig,
    MicroConfig,
    candidate_by_name,
    space_choices,
)


class BaseModel(ABCModule):
    """A static network decoded from ``arch`` over the space's ``macro_cfg``/``micro_cfg``."""

    def __init__(
        self,
        arch: Mapping[str, Any],
        macro_cfg: MacroConfig,
        micro_cfg: MicroConfig,
        superlayer_builder: Type[BaseSuperlayer] = Superlayer,
    ):
        self.macro_cfg, self.micro_cfg = macro_cfg, micro_cfg
        self.superlayer_builder = superlayer_builder
        self.arch: Arch = space_choices(macro_cfg, micro_cfg).validate(arch)
        self.first = ModuleList([b.build() for b in macro_cfg.first])
        self.search = self._construct_stage_layers(self.arch)
        self.last = ModuleList([b.build() for b in macro_cfg.last])

    def _construct_stage_layers(self, arch: Arch) -> ModuleList:
        """Build the search stage of ``arch`` (default: the chosen block of every searchable layer, in order)."""
        return ModuleList([self.build_layer(layer, arch) for layer in self.macro_cfg.search])

    def build_layer(self, layer: LayerSpec, arch: Arch) -> Module:
        """The module ``arch`` picks at ``layer``, built as the supernet's superlayer builds it."""
        return self.superlayer_builder.build_standalone(layer, self.chosen_candidate(layer, arch))

    def chosen_candidate(self, layer: LayerSpec, arch: Arch) -> CandidateSpec:
        """The candidate ``arch`` picks at ``layer``."""
        spec = candidate_by_name(self.micro_cfg).get(arch[layer.label])
        if spec is None or not spec.allowed(layer):
            raise ArchitectureError(f"layer {layer.label!r}: candidate {arch[layer.label]!r} does not fit")
        return spec

    def call(self, x):
        return self.last(self.search(self.first(x)))
