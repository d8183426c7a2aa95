"""Hardware lookup table: per-metric cost of every (layer, candidate) plus the fixed base cost."""

from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple, Type

import numpy as np
from nnabla.core.module import Module
from tqdm import tqdm

from core.checkpoint import write_json
from core.errors import ConfigError
from hardware.measure import COUNTED_METRICS, MEASURED_METRICS, METRICS, MeasureSettings, device_name, measure_modules
from search_space.base_supernet import BaseSuperlayer, Superlayer
from search_space.cost_model import AdditiveCost
from search_space.layers import ModuleList
from search_space.spec import DataInfo, MacroConfig, MicroConfig, layer_candidates, space_choices, spatial_sizes

__all__ = ["BaseLookUpTable", "COUNTED_METRICS", "METRICS"]


class BaseLookUpTable:
    """``info_table[metric][label]`` = cost per candidate (layers x candidates); ``base[metric]`` fixed.

    ``predict(arch, metric)`` = base + sum of the chosen candidates' costs. A label shared by several
    layers sums every layer's cost for the chosen value.
    """

    #: metrics ``construct_info_table`` can produce (counted: flops, params; measured: latency, memory)
    supported_metrics: Tuple[str, ...] = METRICS

    def __init__(
        self,
        macro_cfg: MacroConfig,
        micro_cfg: MicroConfig,
        data: DataInfo,
        metrics: Sequence[str] = COUNTED_METRICS,
        table: Mapping[str, Any] | None = None,
        superlayer_builder: Type[BaseSuperlayer] = Superlayer,
        settings: MeasureSettings | None = None,
        progress: bool = False,
    ):
        self.macro_cfg, self.micro_cfg, self.data = macro_cfg, micro_cfg, data
        self.superlayer_builder = superlayer_builder
        self.settings, self.progress = settings or MeasureSettings(), progress
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
        #: what the table's measurements depend on (set by whoever builds it; compared before reusing it)
        self.fingerprint: Dict[str, Any] | None = None if table is None else table.get("fingerprint")
        #: per measured metric ``{"scale", "offset", ...}``: predictions are ``scale * sum + offset``, fitted to
        #: whole-network measurements (``hardware.tables.calibrate``); raw sums are still available
        self.calibration: Dict[str, Dict[str, float]] = {} if table is None else dict(table.get("calibration", {}))
        if table is None:
            self.info_table, self.base = self.construct_info_table(self.metrics)
            self.device = device_name(self.metrics)
        else:
            self.info_table = {m: {k: list(v) for k, v in table["info_table"][m].items()} for m in self.metrics}
            self.base = {m: float(table["base"][m]) for m in self.metrics}
            self.device = table.get("device", "unknown")
        self._matrix = {m: self._as_matrix(m) for m in self.metrics}

    def construct_info_table(
        self, metrics: Sequence[str]
    ) -> "tuple[Dict[str, Dict[str, List[float]]], Dict[str, float]]":
        """Return ``(info_table, base)`` for ``metrics``: every candidate and the fixed stages, counted/measured."""
        return self.measure_search_stage(metrics), self.measure_fixed_stages(metrics)

    def iter_candidates(self) -> Iterator[Tuple[str, int, Module, Tuple[int, int, int]]]:
        """``(row key, candidate index, module, input shape)`` of every candidate of every search layer, in order.

        The one walk over the space that counting, timing and memory estimation share; the module is the
        layer's superlayer with that candidate active (built by the space's superlayer builder).
        """
        seen: Dict[str, int] = {}
        for layer, size in zip(self.macro_cfg.search, self.search_sizes):
            key = self.row_key(layer.label, seen)
            superlayer = self.superlayer_builder(layer, layer_candidates(layer, self.micro_cfg))
            for i in range(len(superlayer.candidate_names)):
                superlayer.set_active(i)
                yield key, i, superlayer, (layer.in_channels, size, size)

    def measure_search_stage(self, metrics: Sequence[str]) -> Dict[str, Dict[str, List[float]]]:
        """Every fitting candidate at every search layer, on its real input shape (latencies timed together, in
        interleaved rounds; progress shown when measuring)."""
        table: Dict[str, Dict[str, List[float]]] = {m: {} for m in metrics}
        measuring = any(m in MEASURED_METRICS for m in metrics)
        total = sum(len(layer_candidates(layer, self.micro_cfg)) for layer in self.macro_cfg.search)
        rounds = self.settings.rounds if "latency" in metrics else 1
        bar = tqdm(total=total * rounds, desc="lookup table", unit="cand", disable=not (self.progress and measuring),
                   leave=False)  # fmt: skip
        keys: List[str] = []

        def items() -> Iterator[Tuple[Module, Tuple[int, int, int]]]:
            for key, _, module, shape in self.iter_candidates():
                keys.append(key)
                if "latency" not in metrics:
                    bar.update(1)
                yield module, shape

        counts = measure_modules(items(), metrics, self.settings, progress=lambda: bar.update(1))
        bar.close()
        for key, c in zip(keys, counts):
            for m in metrics:
                table[m].setdefault(key, []).append(c[m])
        return table

    def measure_fixed_stages(self, metrics: Sequence[str]) -> Dict[str, float]:
        """The first and last stages (the cost every architecture pays)."""
        # each stage measured as one chain so blocks that change rank (pooling -> linear) get their real inputs
        chains = [
            (ModuleList([s.build() for s in specs]), (specs[0].in_channels, sizes[0], sizes[0]))
            for specs, sizes in ((self.macro_cfg.first, self.first_sizes), (self.macro_cfg.last, self.last_sizes))
            if specs
        ]
        counts = measure_modules(chains, metrics, self.settings)
        return {m: float(sum(c[m] for c in counts)) for m in metrics}

    def predict(self, arch: Mapping[str, Any], metric: str, raw: bool = False) -> float:
        """Cost of one architecture (calibrated unless ``raw``: the plain sum of the entries and the base)."""
        idx = np.asarray(self.choices.to_indices(arch))[None, :]
        return float(self.predict_indices(idx, metric, raw)[0])

    def predict_batch(self, archs: Sequence[Mapping[str, Any]], metric: str, raw: bool = False) -> np.ndarray:
        """Vectorised ``predict`` over many architectures."""
        if not archs:
            return np.zeros(0)
        idx = np.asarray([self.choices.to_indices(a) for a in archs])
        return self.predict_indices(idx, metric, raw)

    def predict_indices(self, idx: np.ndarray, metric: str, raw: bool = False) -> np.ndarray:
        """``predict`` of index-encoded architectures (``(n, labels)``, ``choices.to_indices`` rows)."""
        out = self._predict_indices(np.asarray(idx), metric)
        cal = self.calibration.get(metric)
        return out if raw or cal is None else cal["scale"] * out + cal["offset"]

    def cost_model(self, metric: str, raw: bool = False) -> AdditiveCost:
        """``metric`` as a plain additive model (calibrated unless ``raw``): per label and value the summed cost
        of that label's layers."""
        if metric not in self._matrix:
            raise ConfigError(f"lookup table has no metric {metric!r}; valid: {', '.join(self.metrics)}")
        mat = self._matrix[metric]
        table = {}
        for column, (label, cat) in enumerate(self.choices.items()):
            rows = mat[self._layer_columns == column, : len(cat)]
            table[label] = {value: float(cost) for value, cost in zip(cat.values, rows.sum(axis=0))}
        model = AdditiveCost(self.base[metric], table)
        cal = self.calibration.get(metric)
        return model if raw or cal is None else model.scaled(cal["scale"], cal["offset"])

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
            "fingerprint": self.fingerprint,
            "calibration": self.calibration,
            "device": self.device,
            "metrics": list(self.metrics),
            "base": self.base,
            "info_table": self.info_table,
            "choices": self.choices.to_dict(),
        }

    def save(self, path: str) -> None:
        """Write the table as JSON (atomically)."""
        write_json(path, self.to_dict())
