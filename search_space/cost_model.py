"""The cost models of a space (plain data, no nnabla): what lookup tables export, samplers and penalties use."""

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple, Union

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

    def scaled(self, scale: float, offset: float = 0.0) -> "AdditiveCost":
        """The model of ``scale * cost + offset`` (a calibration): entries scaled, the offset in the base."""
        table = {label: {v: scale * c for v, c in row.items()} for label, row in self.table.items()}
        return AdditiveCost(scale * self.base + offset, table)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``{"base", "table": {label: [[value, cost], ...]}}`` (values need not be strings)."""
        return {
            "base": self.base,
            "table": {label: [[v, c] for v, c in row.items()] for label, row in self.table.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AdditiveCost":
        """Inverse of ``to_dict``."""

        def key(v: Any) -> Any:  # a subset's value (an index tuple) comes back from JSON as a list
            return tuple(v) if isinstance(v, list) else v

        return cls(data["base"], {label: {key(v): c for v, c in pairs} for label, pairs in data["table"].items()})


@dataclass(frozen=True)
class GatedTerm:
    """A cost counted only while input ``index`` of the input choice ``gate`` is chosen: ``costs[arch[label]]``.

    E.g. a DARTS edge: its operation (``label``) costs only if its node takes that edge as an input.
    """

    gate: str
    index: int
    label: str
    costs: Mapping[Any, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", {v: float(c) for v, c in self.costs.items()})
        if not self.costs or not all(math.isfinite(c) for c in self.costs.values()):
            raise ConfigError(f"gated cost of {self.label!r}: needs finite costs for its values")


@dataclass(frozen=True)
class GatedCost:
    """``cost(arch) = additive(arch) + sum of the terms whose gate input is chosen`` (plain data, no nnabla).

    The cost model of a space whose input choices decide which operations run at all (cells). ``gates`` holds
    the values (index tuples) of every gating input choice. ``bounds()`` gives additive models below and above
    it, which is what budget-aware samplers count on before checking the exact cost.
    """

    additive: AdditiveCost
    terms: Tuple[GatedTerm, ...]
    gates: Mapping[str, Tuple[Tuple[int, ...], ...]]

    def __post_init__(self) -> None:
        merged: Dict[Tuple[str, int, str], Dict[Any, float]] = {}
        for t in self.terms:  # layers sharing a label and a gate (cells of one type) are one term
            row = merged.setdefault((t.gate, int(t.index), t.label), {v: 0.0 for v in t.costs})
            for v, c in t.costs.items():
                row[v] = row.get(v, 0.0) + c
        object.__setattr__(self, "terms", tuple(GatedTerm(g, i, lab, row) for (g, i, lab), row in merged.items()))
        gates = {str(g): tuple(tuple(int(i) for i in v) for v in values) for g, values in self.gates.items()}
        missing = sorted({t.gate for t in self.terms} - set(gates))
        if missing:
            raise ConfigError(f"gated cost: gate {missing[0]!r} has no values")
        object.__setattr__(self, "gates", gates)

    def __hash__(self) -> int:
        return hash((self.additive, tuple((t.gate, t.index, t.label, tuple(t.costs.items())) for t in self.terms)))

    @property
    def base(self) -> float:
        """The cost no decision changes."""
        return self.additive.base

    def __call__(self, arch: Mapping[str, Any]) -> float:
        return self.cost(arch)

    def cost(self, arch: Mapping[str, Any]) -> float:
        """The architecture's cost."""
        total = self.additive.cost(arch)
        for t in self.terms:
            if t.index in tuple(arch[t.gate]):
                try:
                    total += t.costs[arch[t.label]]
                except KeyError:
                    raise ArchitectureError(
                        f"gated cost: label {t.label!r} has no cost for value {arch.get(t.label)!r}"
                    ) from None
        return total

    def bounds(self) -> Tuple[AdditiveCost, AdditiveCost]:
        """Additive models ``(lower, upper)`` with ``lower(a) <= cost(a) <= upper(a)`` for every architecture.

        Each term's cheapest (dearest) cost moves onto the gate's values that choose its input, so the lower
        model is exact on the cheapest architecture when every gated label has one gate (cells).
        """
        out = []
        for pick in (min, max):
            table = {label: dict(row) for label, row in self.additive.table.items()}
            for gate, values in self.gates.items():
                row = table.setdefault(gate, {v: 0.0 for v in values})
                for t in self.terms:
                    if t.gate == gate:
                        for v in values:
                            row[v] += pick(t.costs.values()) if t.index in v else 0.0
            out.append(AdditiveCost(self.additive.base, table))
        return out[0], out[1]

    def scaled(self, scale: float, offset: float = 0.0) -> "GatedCost":
        """The model of ``scale * cost + offset`` (a calibration)."""
        terms = tuple(
            GatedTerm(t.gate, t.index, t.label, {v: scale * c for v, c in t.costs.items()}) for t in self.terms
        )
        return GatedCost(self.additive.scaled(scale, offset), terms, self.gates)

    def min_cost(self) -> float:
        """Cost of the cheapest architecture (a lower bound if a gated label has several gates)."""
        return self.bounds()[0].min_cost()

    def max_cost(self) -> float:
        """Cost of the most expensive architecture (an upper bound if a gated label has several gates)."""
        return self.bounds()[1].max_cost()

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``{"base", "table", "gated": [{gate, index, label, costs: [[value, cost], ...]}], "gates"}``."""
        return {
            **self.additive.to_dict(),
            "gated": [
                {"gate": t.gate, "index": t.index, "label": t.label, "costs": [[v, c] for v, c in t.costs.items()]}
                for t in self.terms
            ],
            "gates": {g: [list(v) for v in values] for g, values in self.gates.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GatedCost":
        """Inverse of ``to_dict``."""
        terms = tuple(
            GatedTerm(t["gate"], int(t["index"]), t["label"], {v: c for v, c in t["costs"]}) for t in data["gated"]
        )
        return cls(AdditiveCost.from_dict(data), terms, {g: tuple(map(tuple, v)) for g, v in data["gates"].items()})


#: what a budget-aware sampler and the expected-cost penalty understand
CostModel = Union[AdditiveCost, GatedCost]


def cost_model_from_dict(data: Mapping[str, Any]) -> CostModel:
    """Inverse of either model's ``to_dict``."""
    return GatedCost.from_dict(data) if "gated" in data else AdditiveCost.from_dict(data)
