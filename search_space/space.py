"""A search space as registered: its supernet, standalone model and lookup-table classes, plus params.

Two forms: a macro/micro space (``BaseSupernet`` with ``get_model_cfg``; model and lookup table built from
the specs, custom classes optional) and a free-form one (any ``Searchable`` Module of LayerChoice /
InputChoice taking ``(params, data)``; its standalone networks and lookup table are derived from it).
"""

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Tuple, Type

from nnabla.core.module import Module

from core.errors import ArchitectureError
from core.registries import SEARCH_SPACES
from core.typed import check_ranges
from hardware.measure import MeasureSettings
from search_space.base_lookup_table import COUNTED_METRICS, BaseLookUpTable
from search_space.base_model import BaseModel
from search_space.base_supernet import BaseSupernet
from search_space.choices import SearchSpaceChoices
from search_space.freeform import ObservedLookUpTable, standalone
from search_space.searchable import Searchable
from search_space.spec import DataInfo, MacroConfig, MicroConfig, space_choices


@dataclass(frozen=True)
class SearchSpace:
    """The parts of one space; ``Params`` (the supernet's params dataclass) types its config section."""

    name: str
    supernet: Type[Searchable]
    model: Type[BaseModel] | None = None
    lookup_table: Type[BaseLookUpTable] | None = None

    @property
    def Params(self) -> type:  # noqa: N802  (same spelling as every component's Params)
        """The params dataclass of this space's config section."""
        return self.supernet.Params

    @property
    def macro(self) -> bool:
        """Whether the space is described by macro/micro configs (else it is free-form)."""
        return issubclass(self.supernet, BaseSupernet)

    def model_cfg(self, params: Any, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """``(macro_cfg, micro_cfg)`` for these params and data (params outside their ranges are refused)."""
        check_ranges(params, "search_space")
        return self.supernet.get_model_cfg(params, data)

    def choices(self, params: Any, data: DataInfo) -> SearchSpaceChoices:
        """The space's decisions (macro spaces: without building any network)."""
        if self.macro:
            return space_choices(*self.model_cfg(params, data))
        return self.build_supernet(params, data).choices()

    def build_supernet(self, params: Any, data: DataInfo) -> Searchable:
        """The supernet holding every candidate."""
        check_ranges(params, "search_space")
        return self.supernet(params, data)

    def build_model(self, params: Any, data: DataInfo, arch: Mapping[str, Any]) -> Module:
        """The standalone network of ``arch`` (fresh weights)."""
        if self.macro:
            model = self.model or BaseModel
            return model(arch, *self.model_cfg(params, data), superlayer_builder=self.supernet.superlayer_builder)
        return standalone(self.build_supernet(params, data), arch, (data.in_channels, data.input_size, data.input_size))

    def build_lookup_table(
        self,
        params: Any,
        data: DataInfo,
        metrics: Sequence[str] = COUNTED_METRICS,
        settings: MeasureSettings | None = None,
        progress: bool = False,
    ) -> Any:
        """Count (flops, params) or measure (latency, memory) every candidate's cost at its position."""
        if self.macro:
            table = self.lookup_table or BaseLookUpTable
            builder = self.supernet.superlayer_builder
            return table(
                *self.model_cfg(params, data),
                data,
                metrics=metrics,
                superlayer_builder=builder,
                settings=settings,
                progress=progress,
            )
        shape = (data.in_channels, data.input_size, data.input_size)
        return ObservedLookUpTable(self.build_supernet(params, data), shape, metrics, settings)

    def table_from_dict(self, saved: Mapping[str, Any], params: Any, data: DataInfo) -> Any:
        """A table from its ``to_dict`` form; ArchitectureError if it was built for other choices."""
        if self.macro:
            table = self.lookup_table or BaseLookUpTable
            lut = table(
                *self.model_cfg(params, data),
                data,
                metrics=saved["metrics"],
                table=saved,
                superlayer_builder=self.supernet.superlayer_builder,
            )
        else:
            lut = ObservedLookUpTable.from_dict(saved, self.choices(params, data))
        if saved.get("choices") != lut.choices.to_dict():
            raise ArchitectureError("the lookup table was built for a different search space")
        return lut


def register_space(
    name: str,
    supernet: Type[Searchable],
    model: Type[BaseModel] | None = None,
    lookup_table: Type[BaseLookUpTable] | None = None,
) -> SearchSpace:
    """Register a space under ``name`` (the ``search_space_agent`` value) and return it.

    ``model`` / ``lookup_table`` are optional: without them a macro/micro space uses the base classes and a
    free-form space derives its standalone networks and its table from the supernet.
    """
    if not (isinstance(supernet, type) and issubclass(supernet, Searchable) and issubclass(supernet, Module)):
        raise TypeError(f"search space {name!r}: {supernet!r} must be a Module subclass with the Searchable mixin")
    for cls, base in ((model, BaseModel), (lookup_table, BaseLookUpTable)):
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"search space {name!r}: {cls!r} must subclass {base.__name__}")
    if not hasattr(supernet, "Params"):
        raise TypeError(f"search space {name!r}: {supernet.__name__} must declare a Params dataclass")
    space = SearchSpace(name, supernet, model, lookup_table)
    SEARCH_SPACES.add(name, space)
    return space
