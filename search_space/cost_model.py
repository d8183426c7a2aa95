"""The additive cost model of a space (plain data, no nnabla): what lookup tables export and samplers use."""

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping

from core.errors import ArchitectureError, ConfigError


@dataclass(frozen=True)
class AdditiveCost:
    """Plain-data additive cost model: ``cost(arch) = base + sum(table[label][arch[label]])``.

    A label shared by several layers already sums its layers' costs. Labels of a space missing from ``table``
    cost nothing.
    """

    base: float
    table: Mapping[str, Mapping[Any, float]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", float(self.base))
        table: Dict[str, Dict[Any, float]] = {}
        for label, row in self.table.items():
            table[str(label)] = {value: float(cost) for value, cost in row.items()}
            if not table[str(label)]:
                raise ConfigError(f"additive cost: label {label!r} has no values")
            for value, cost in table[str(label)].items():
                if not math.isfinite(cost):
                    raise ConfigError(f"additive cost: label {label!r} value {value!r} has a non-finite cost {cost}")
        if not math.isfinite(self.base):
            raise ConfigError(f"additive cost: non-finite base cost {self.base}")
        object.__setattr__(self, "table", table)

    def __hash__(self) -> int:
        return hash((self.base, tuple((label, tuple(row.items())) for label, row in self.table.items())))

    def __call__(self, arch: Mapping[str, Any]) -> float:
        """Same as ``cost``: the model is usable wherever a cost function is."""
        return self.cost(arch)

    def cost(self, arch: Mapping[str, Any]) -> float:
        """The architecture's cost (summed in table order, so equal archs always give the same float)."""
        total = self.base
        for label, row in self.table.items():
            if label not in arch:
                raise ArchitectureError(f"additive cost: the architecture has no value for label {label!r}")
            try:
                total += row[arch[label]]
            except KeyError:
                raise ArchitectureError(
                    f"additive cost: label {label!r} has no cost for value {arch[label]!r}; valid: {list(row)}"
                ) from None
        return total

    def min_cost(self) -> float:
        """Cost of the cheapest architecture."""
        return self.base + sum(min(row.values()) for row in self.table.values())

    def max_cost(self) -> float:
        """Cost of the most expensive architecture."""
        return self.base + sum(max(row.values()) for row in self.table.values())

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``{"base", "table": {label: [[value, cost], ...]}}`` (values need not be strings)."""
        return {
            "base": self.base,
            "table": {label: [[v, c] for v, c in row.items()] for label, row in self.table.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AdditiveCost":
        """Inverse of ``to_dict``."""
        return cls(data["base"], {label: {v: c for v, c in pairs} for label, pairs in data["table"].items()})
