"""Hardware lookup table: per-metric cost of every (layer, candidate) plus the fixed base cost."""

import json
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Type

import numpy as np

from core.checkpoint import write_json
from core.errors import ArchitectureError, ConfigError
from hardware.counter import count_module
from search_space.base_supernet import BaseSuperlayer, Superlayer
from search_space.cost_model import AdditiveCost
from search_space.layers import ModuleList
from search_space.spec import DataInfo, MacroConfig, MicroConfig, layer_candidates, space_choices, spatial_sizes

#: metrics every lookup table can count from the nnabla graph
COUNTED_METRICS = ("flops", "params")


class BaseLookUpTable:
    """``info_table[metric][label]`` = cost per candidate (layers x candidates); ``base[metric]`` fixed.

    ``predict(arch, metric)`` = base + sum of the chosen candidates' costs. A label shared by several
    layers sums every layer's cost for the chosen value.
    """

    #: metrics ``construct_info_table`` can produce; a subclass that measures more (latency) extends it
    supported_metrics: Tuple[str, ...] = COUNTED_METRICS

    def __init__(
        self,
        macro_cfg: MacroConfig,
        micro_cfg: MicroConfig,
        data: DataInfo,
        metrics: Sequence[str] = COUNTED_METRICS,
        table: Mapping[str, Any] | None = None,
        superlayer_builder: Type[BaseSuperlayer] = Superlayer,
    ):
        self.macro_cfg, self.micro_cfg, self.data = macro_cfg, micro_cfg, data
        self.superlayer_builder = superlayer_builder
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in self.supported_metrics]
        if table is None and unknown:
            raise ConfigError(
                f"lookup table metric {unknown[0]!r} is not supported; valid: {', '.join(self.supported_metrics)}"
            )
        self.first_sizes, self.search_sizes, self.last_sizes = spatial_sizes(macro_cfg, data.input_size)
        self.choices = space_choices(macro_cfg, micro_cfg)
        # column of each search layer's decision in an index-encoded arch (shared labels share a column)
        self._layer_columns = np.asarray([self.choices.labels.index(layer.label) for layer in macro_cfg.search])
        if table is None:
            self.info_table, self.base = self.construct_info_table(self.metrics)
            self.device = "analytic (nnabla graph count)"
        else:
            self.info_table = {m: {k: list(v) for k, v in table["info_table"][m].items()} for m in self.metrics}
            self.base = {m: float(table["base"][m]) for m in self.metrics}
            self.device = table.get("device", "unknown")
        self._matrix = {m: self._as_matrix(m) for m in self.metrics}

    def construct_info_table(
        self, metrics: Sequence[str]
    ) -> "tuple[Dict[str, Dict[str, List[float]]], Dict[str, float]]":
        """Return ``(info_table, base)`` for ``metrics`` (default: every candidate and the fixed stages, counted)."""
        return self.count_search_stage(metrics), self.count_fixed_stages(metrics)

    def count_search_stage(self, metrics: Sequence[str]) -> Dict[str, Dict[str, List[float]]]:
        """Count every fitting candidate at every search layer, on its real input shape."""
        table: Dict[str, Dict[str, List[float]]] = {m: {} for m in metrics}
        seen: Dict[str, int] = {}
        for layer, size in zip(self.macro_cfg.search, self.search_sizes):
            key = self.row_key(layer.label, seen)
            shape = (layer.in_channels, size, size)
            superlayer = self.superlayer_builder(layer, layer_candidates(layer, self.micro_cfg))
            counts = []
            for i in range(len(superlayer.candidate_names)):
                superlayer.set_active(i)
                counts.append(count_module(superlayer, shape))
            for m in metrics:
                table[m][key] = [c[m] for c in counts]
        return table

    def count_fixed_stages(self, metrics: Sequence[str]) -> Dict[str, float]:
        """Count the first and last stages (the cost every architecture pays)."""
        base = {m: 0.0 for m in metrics}
        for specs, sizes in ((self.macro_cfg.first, self.first_sizes), (self.macro_cfg.last, self.last_sizes)):
            if not specs:
                continue
            # counted as one chain so blocks that change rank (pooling -> linear) get their real inputs
            counts = count_module(ModuleList([s.build() for s in specs]), (specs[0].in_channels, sizes[0], sizes[0]))
            for m in metrics:
                base[m] += counts[m]
        return base

    def predict(self, arch: Mapping[str, Any], metric: str) -> float:
        """Cost of one architecture."""
        idx = np.asarray(self.choices.to_indices(arch))[None, :]
        return float(self._predict_indices(idx, metric)[0])

    def predict_batch(self, archs: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray:
        """Vectorised ``predict`` over many architectures."""
        if not archs:
            return np.zeros(0)
        idx = np.asarray([self.choices.to_indices(a) for a in archs])
        return self._predict_indices(idx, metric)

    def cost_model(self, metric: str) -> AdditiveCost:
        """``metric`` as a plain additive model: per label and value the summed cost of that label's layers."""
        if metric not in self._matrix:
            raise ConfigError(f"lookup table has no metric {metric!r}; valid: {', '.join(self.metrics)}")
        mat = self._matrix[metric]
        table = {}
        for column, (label, cat) in enumerate(self.choices.items()):
            rows = mat[self._layer_columns == column, : len(cat)]
            table[label] = {value: float(cost) for value, cost in zip(cat.values, rows.sum(axis=0))}
        return AdditiveCost(self.base[metric], table)

    def _predict_indices(self, idx: np.ndarray, metric: str) -> np.ndarray:
        if metric not in self._matrix:
            raise ConfigError(f"lookup table has no metric {metric!r}; valid: {', '.join(self.metrics)}")
        cost = self._matrix[metric]
        chosen = idx[:, self._layer_columns]
        return self.base[metric] + cost[np.arange(len(self._layer_columns))[None, :], chosen].sum(axis=1)

    def _as_matrix(self, metric: str) -> np.ndarray:
        """(layers x max candidates) cost matrix of ``metric``, NaN where a layer has fewer candidates."""
        seen: Dict[str, int] = {}
        per_layer = [self.info_table[metric][self.row_key(layer.label, seen)] for layer in self.macro_cfg.search]
        mat = np.full((len(per_layer), max(len(r) for r in per_layer)), np.nan)
        for i, r in enumerate(per_layer):
            mat[i, : len(r)] = r
        return mat

    @staticmethod
    def row_key(label: str, seen: Dict[str, int]) -> str:
        """Table row key of the next layer labelled ``label`` (``label#k`` for the k-th repeat)."""
        k = seen.get(label, 0)
        seen[label] = k + 1
        return label if k == 0 else f"{label}#{k}"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready table with the device/context it was measured on."""
        return {
            "device": self.device,
            "metrics": list(self.metrics),
            "base": self.base,
            "info_table": self.info_table,
            "choices": self.choices.to_dict(),
        }

    def save(self, path: str) -> None:
        """Write the table as JSON (atomically)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(
        cls,
        path: str,
        macro_cfg: MacroConfig,
        micro_cfg: MicroConfig,
        data: DataInfo,
        superlayer_builder: Type[BaseSuperlayer] = Superlayer,
    ) -> "BaseLookUpTable":
        """Read a table saved by ``save`` for the same space; a mismatched space is an error."""
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        lut = cls(
            macro_cfg, micro_cfg, data, metrics=table["metrics"], table=table, superlayer_builder=superlayer_builder
        )
        if table.get("choices") != lut.choices.to_dict():
            raise ArchitectureError(f"{path}: lookup table was built for a different search space")
        return lut
