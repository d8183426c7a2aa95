"""A search space as registered: its supernet, standalone model and lookup-table classes, plus params."""

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Tuple, Type

from core.registries import SEARCH_SPACES
from core.typed import check_ranges
from search_space.base_lookup_table import COUNTED_METRICS, BaseLookUpTable
from search_space.base_model import BaseModel
from search_space.base_supernet import BaseSupernet
from search_space.choices import SearchSpaceChoices
from search_space.spec import DataInfo, MacroConfig, MicroConfig, space_choices


@dataclass(frozen=True)
class SearchSpace:
    """The parts of one space; ``Params`` (the supernet's params dataclass) types its config section."""

    name: str
    supernet: Type[BaseSupernet]
    model: Type[BaseModel]
    lookup_table: Type[BaseLookUpTable]

    @property
    def Params(self) -> type:  # noqa: N802  (same spelling as every component's Params)
        """The params dataclass of this space's config section."""
        return self.supernet.Params

    def model_cfg(self, params: Any, data: DataInfo) -> Tuple[MacroConfig, MicroConfig]:
        """``(macro_cfg, micro_cfg)`` for these params and data (params outside their ranges are refused)."""
        check_ranges(params, "search_space")
        return self.supernet.get_model_cfg(params, data)

    def choices(self, params: Any, data: DataInfo) -> SearchSpaceChoices:
        """The space's decisions without building any network."""
        return space_choices(*self.model_cfg(params, data))

    def build_supernet(self, params: Any, data: DataInfo) -> BaseSupernet:
        """The supernet holding every candidate."""
        return self.supernet(params, data)

    def build_model(self, params: Any, data: DataInfo, arch: Mapping[str, Any]) -> BaseModel:
        """The standalone network of ``arch``."""
        return self.model(arch, *self.model_cfg(params, data), superlayer_builder=self.supernet.superlayer_builder)

    def build_lookup_table(
        self, params: Any, data: DataInfo, metrics: Sequence[str] = COUNTED_METRICS
    ) -> BaseLookUpTable:
        """Count every candidate's cost at its position."""
        return self.lookup_table(
            *self.model_cfg(params, data), data, metrics=metrics, superlayer_builder=self.supernet.superlayer_builder
        )

    def load_lookup_table(self, path: str, params: Any, data: DataInfo) -> BaseLookUpTable:
        """Read a saved table, checking it belongs to this space configuration."""
        return self.lookup_table.load(path, *self.model_cfg(params, data), data, self.supernet.superlayer_builder)


def register_space(
    name: str, supernet: Type[BaseSupernet], model: Type[BaseModel], lookup_table: Type[BaseLookUpTable]
) -> SearchSpace:
    """Register a space under ``name`` (the ``search_space_agent`` value) and return it."""
    for cls, base in ((supernet, BaseSupernet), (model, BaseModel), (lookup_table, BaseLookUpTable)):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"search space {name!r}: {cls!r} must subclass {base.__name__}")
    if not hasattr(supernet, "Params"):
        raise TypeError(f"search space {name!r}: {supernet.__name__} must declare a Params dataclass")
    space = SearchSpace(name, supernet, model, lookup_table)
    SEARCH_SPACES.add(name, space)
    return space
