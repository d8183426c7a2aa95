"""Free-form spaces: any Searchable Module tree of LayerChoice / InputChoice, with no model or table to write.

- ``standalone(network, arch, input_shape)``: the network of one architecture, derived from a freshly built
  supernet: every LayerChoice keeps only its chosen candidate, and a LayerChoice whose output the network
  does not read under ``arch`` (a cell edge its node does not take) keeps nothing, so unchosen candidates,
  Zero ops and unused edges are not in the module tree, its parameters or its graph.
- ``ObservedLookUpTable``: the cost of every (label, value), each candidate counted on the input shape it
  really receives (observed in a forward pass), plus the fixed base cost. A LayerChoice whose output is
  passed straight to an InputChoice costs only while that input is chosen (a ``GatedCost`` term). The table
  is checked against whole-network counts of random architectures, so a space whose costs are neither
  additive nor gated that way is refused, not mispredicted.
"""

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Set, Tuple

import nnabla as nn
import numpy as np
from nnabla.core.module import Module

from core.errors import ArchitectureError, ConfigError
from core.graph import untraced
from hardware.measure import COUNTED_METRICS, METRICS, MeasureSettings, device_name, measure_module, measure_modules
from search_space.base_lookup_table import BaseLookUpTable
from search_space.choices import Arch
from search_space.cost_model import AdditiveCost, CostModel, GatedCost, GatedTerm, cost_model_from_dict
from search_space.layers import ModuleList
from search_space.mutables import Decision, InputChoice, LayerChoice, observing
from search_space.searchable import Searchable


class FixedDecision(Decision):
    """A decision that is no longer one: the standalone network's fixed value."""

    def __init__(self, label: str, value: Any):
        self.label, self.fixed, self.index, self.mode = label, value, 0, "sample"
        self.alpha, self.gate_hook, self.choice, self.n_alpha = None, None, None, 0

    @property
    def value(self) -> Any:
        """The fixed value."""
        return self.fixed


class Unused(Module):
    """What a pruned LayerChoice computes when the network does not read its output: nothing (no parameter)."""

    def call(self, x):
        return x


class StandaloneNetwork(Module):
    """The standalone network of one architecture (what is retrained, counted and exported)."""

    def __init__(self, network: Module, arch: Arch):
        self.net = network
        self.__dict__["arch"] = dict(arch)

    def call(self, x):
        return self.net(x)


def standalone(network: Searchable, arch: Mapping[str, Any], input_shape: Sequence[int]) -> StandaloneNetwork:
    """Prune a freshly built supernet to ``arch`` (in place) and wrap it; the supernet is not usable after.

    A chosen Zero operation stays: it reads its input, which may keep a preprocessing step alive that the
    lookup table counts (dropping it would make the network cheaper than its prediction).
    """
    network.set_active(arch)
    arch = network.active_arch()
    unread = unread_choices(network, input_shape)
    for site in network.mutables():
        m, d = site.mutable, site.mutable.decision
        if isinstance(m, LayerChoice):
            m.candidates = ModuleList([Unused() if site.path in unread else m.candidates[d.index]])
            m.__dict__["candidate_names"] = [d.value]
        m.__dict__["decision"] = FixedDecision(d.label, d.value)
    network.__dict__.pop("_searchable", None)
    finish = getattr(network, "finish_standalone", None)
    if finish is not None:  # a space may train its standalone networks differently (drop-path, auxiliary head)
        finish()
    return StandaloneNetwork(network, arch)


def unread_choices(network: Searchable, input_shape: Sequence[int]) -> Set[str]:
    """Paths of the LayerChoices computed under the active architecture whose output the network never reads."""
    with observing() as obs:
        y = _forward(network, input_shape)
    read = {y}
    y.visit(lambda f: read.update(f.inputs))
    outputs = {s.path: obs.outputs.get(id(s.mutable)) for s in network.mutables() if isinstance(s.mutable, LayerChoice)}
    return {path for path, y in outputs.items() if y is not None and y not in read}


class ObservedLookUpTable:
    """Per-(label, value) costs counted on observed input shapes; ``predict`` = base + chosen values' costs
    (+ the costs of gated choices whose input is chosen)."""

    def __init__(
        self,
        network: Searchable,
        input_shape: Sequence[int],
        metrics: Sequence[str] = COUNTED_METRICS,
        settings: MeasureSettings | None = None,
    ):
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ConfigError(f"lookup table metric {unknown[0]!r} is not supported; valid: {', '.join(METRICS)}")
        self.metrics, self.choices = tuple(metrics), network.choices()
        self.settings = settings or MeasureSettings()
        self.device, self.fingerprint, self.calibration = device_name(self.metrics), None, {}
        seen = observe(network, tuple(input_shape))
        #: ``{LayerChoice path: (input-choice label, input index)}``: what ``Searchable.set_gates`` takes
        self.path_gates = dict(seen.gates)
        costs: Dict[str, Dict[str, Dict[Any, float]]] = {m: OrderedDict() for m in self.metrics}
        for label in self.choices:
            for m in self.metrics:
                costs[m][label] = {v: 0.0 for v in self.choices[label].values}
        terms: Dict[str, List[GatedTerm]] = {m: [] for m in self.metrics}
        #: ``{input-choice label: {input index: [labels of the choices that run only if it is chosen]}}``
        self.gates: Dict[str, Dict[int, List[str]]] = {}
        # choosing inputs computes nothing (sum / concat are free in this convention): LayerChoices only
        sites = [site for site in network.mutables() if isinstance(site.mutable, LayerChoice)]
        items = [(module, seen.shapes[site.path][1:]) for site in sites for module in site.mutable.candidates]
        measured = iter(measure_modules(items, self.metrics, self.settings))  # latencies timed together
        for site in sites:
            label = site.mutable.decision.label
            counted = {value: next(measured) for value in site.mutable.candidate_names}
            gate = seen.gates.get(site.path)
            for m in self.metrics:
                if gate is None:
                    for value, c in counted.items():
                        costs[m][label][value] += c[m]
                else:
                    terms[m].append(GatedTerm(gate[0], gate[1], label, {v: c[m] for v, c in counted.items()}))
            if gate is not None and label not in self.gates.setdefault(gate[0], {}).setdefault(gate[1], []):
                self.gates[gate[0]][gate[1]].append(label)
        self.models: Dict[str, CostModel] = {}
        arch0 = {label: c.values[0] for label, c in self.choices.items()}
        whole = measure_network(network, arch0, input_shape, self.metrics, self.settings)
        for m in self.metrics:
            model = self._model(AdditiveCost(0.0, costs[m]), terms[m])
            self.models[m] = self._model(AdditiveCost(whole[m] - model.cost(arch0), costs[m]), terms[m])
        self.base = {m: self.models[m].base for m in self.metrics}
        self.info_table: Dict[str, Dict[str, List[float]]] = {m: {} for m in self.metrics}
        for m in self.metrics:
            for label, row in costs[m].items():
                gated = [t for t in self.models[m].terms if t.label == label] if self.gates else []
                values = self.choices[label].values
                self.info_table[m][label] = [row[v] + sum(t.costs[v] for t in gated) for v in values]
        self._check_counts(network, input_shape)

    def _model(self, additive: AdditiveCost, terms: List[GatedTerm]) -> CostModel:
        if not terms:
            return additive
        return GatedCost(additive, tuple(terms), {g: self.choices[g].values for g in self.gates})

    def _check_counts(self, network: Searchable, input_shape: Sequence[int], samples: int = 4) -> None:
        """Counted metrics must equal whole-network counts (measured ones are validated by hardware.validate)."""
        counted = [m for m in self.metrics if m in COUNTED_METRICS]
        rng = np.random.default_rng(0)
        for _ in range(samples if counted else 0):
            arch = self.choices.sample(rng)
            whole = measure_network(network, arch, input_shape, counted)
            for m in counted:
                if not np.isclose(whole[m], self.predict(arch, m), rtol=1e-9, atol=1e-6):
                    raise ArchitectureError(
                        f"the costs of this space are not additive per decision ({m} of {arch}: counted "
                        f"{whole[m]:.6g}, table {self.predict(arch, m):.6g}); give the space its own lookup table"
                    )

    def predict(self, arch: Mapping[str, Any], metric: str, raw: bool = False) -> float:
        """Cost of one architecture (calibrated unless ``raw``)."""
        return self.cost_model(metric, raw).cost(self.choices.validate(arch))

    def predict_batch(self, archs: Sequence[Mapping[str, Any]], metric: str, raw: bool = False) -> np.ndarray:
        """``predict`` over many architectures."""
        model = self.cost_model(metric, raw)
        return np.asarray([model.cost(self.choices.validate(a)) for a in archs], dtype=np.float64)

    def predict_indices(self, idx: np.ndarray, metric: str, raw: bool = False) -> np.ndarray:
        """``predict`` of index-encoded architectures (``(n, labels)`` rows of ``choices.to_indices``), vectorised."""
        model, idx = self.cost_model(metric, raw), np.asarray(idx)
        column = {label: k for k, label in enumerate(self.choices.labels)}

        def values(label: str, row: Mapping[Any, float]) -> np.ndarray:
            return np.asarray([row[v] for v in self.choices[label].values], dtype=np.float64)

        additive = model.additive if isinstance(model, GatedCost) else model
        total = np.full(len(idx), additive.base)
        for label, row in additive.table.items():
            total += values(label, row)[idx[:, column[label]]]
        for t in model.terms if isinstance(model, GatedCost) else ():
            taken = np.asarray([t.index in v for v in self.choices[t.gate].values], dtype=np.float64)
            total += taken[idx[:, column[t.gate]]] * values(t.label, t.costs)[idx[:, column[t.label]]]
        return total

    def cost_model(self, metric: str, raw: bool = False) -> CostModel:
        """The table as a plain-data cost model (``GatedCost`` when input choices decide what runs), calibrated
        unless ``raw``."""
        if metric not in self.models:
            raise ConfigError(f"lookup table has no metric {metric!r}; valid: {', '.join(self.metrics)}")
        cal = self.calibration.get(metric)
        return self.models[metric] if raw or cal is None else self.models[metric].scaled(cal["scale"], cal["offset"])

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form of a macro space's table (fingerprint, device, metrics, base, info_table, choices), plus
        every cost model and the gates."""
        out = BaseLookUpTable.to_dict(self)
        out["cost_models"] = {m: self.models[m].to_dict() for m in self.metrics}
        out["gates"] = {g: {str(i): labels for i, labels in row.items()} for g, row in self.gates.items()}
        out["path_gates"] = {path: list(gate) for path, gate in self.path_gates.items()}
        return out

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any], choices: Any) -> "ObservedLookUpTable":
        """Inverse of ``to_dict`` for a space with ``choices``."""
        table = cls.__new__(cls)
        table.metrics, table.choices, table.settings = tuple(saved["metrics"]), choices, None
        table.device, table.fingerprint = saved.get("device", "unknown"), saved.get("fingerprint")
        table.calibration = dict(saved.get("calibration", {}))
        table.info_table = {m: {k: list(v) for k, v in saved["info_table"][m].items()} for m in table.metrics}
        table.base = {m: float(saved["base"][m]) for m in table.metrics}
        table.models = {m: cost_model_from_dict(saved["cost_models"][m]) for m in table.metrics}
        table.gates = {g: {int(i): list(labels) for i, labels in row.items()} for g, row in saved["gates"].items()}
        table.path_gates = {path: (gate[0], int(gate[1])) for path, gate in saved["path_gates"].items()}
        return table

    save = BaseLookUpTable.save


@dataclass
class Observation:
    """What forward passes showed of a network's LayerChoices: input shapes and gating input choices."""

    #: LayerChoice path -> the input shape it receives (batch axis first)
    shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    #: LayerChoice path -> (InputChoice label, input index) its output is passed to, as that input
    gates: Dict[str, Tuple[str, int]] = field(default_factory=dict)


def observe(network: Searchable, input_shape: Sequence[int]) -> Observation:
    """Input shapes and gates of every LayerChoice (several forward passes reach nested choices)."""
    out = Observation()
    sites = [s for s in network.mutables() if isinstance(s.mutable, LayerChoice)]
    inputs = [s for s in network.mutables() if isinstance(s.mutable, InputChoice)]
    rng = np.random.default_rng(0)
    saved = network.active_arch()
    try:
        for attempt in range(32):
            arch = {label: c.values[0] for label, c in network.choices().items()} if attempt == 0 else None
            network.set_active(arch or network.choices().sample(rng))
            with observing() as obs:
                _forward(network, input_shape)
            fed: Dict[nn.Variable, List[Tuple[str, int]]] = {}
            for s in inputs:
                for i, v in enumerate(obs.inputs.get(id(s.mutable), [])):
                    fed.setdefault(v, []).append((s.mutable.decision.label, i))
            for s in sites:
                if id(s.mutable) in obs.shapes and s.path not in out.shapes:
                    out.shapes[s.path] = obs.shapes[id(s.mutable)]
                    targets = fed.get(obs.outputs[id(s.mutable)], [])
                    if len(targets) == 1:
                        out.gates[s.path] = targets[0]
            if len(out.shapes) == len(sites):
                return out
    finally:
        network.set_active(saved)
    missing = [s.path for s in sites if s.path not in out.shapes]
    raise ArchitectureError(f"LayerChoice {missing[0]!r} is never reached by a forward pass; it cannot be counted")


def _forward(network: Module, input_shape: Sequence[int]) -> nn.Variable:
    """One untraced inference-mode forward graph of a single sample."""
    was = network.training
    network.training = False
    try:
        with untraced():
            return network(nn.Variable((1,) + tuple(input_shape)))
    finally:
        network.training = was


def measure_network(
    network: Searchable,
    arch: Mapping[str, Any],
    input_shape: Sequence[int],
    metrics: Sequence[str] = COUNTED_METRICS,
    settings: MeasureSettings | None = None,
) -> Dict[str, float]:
    """``metrics`` of the graph ``arch`` computes in the supernet (sample mode)."""
    saved = network.active_arch()
    try:
        network.set_active(arch)
        return measure_module(network, tuple(input_shape), metrics, settings)
    finally:
        network.set_active(saved)
