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
from hardware.counter import count_module
from search_space.base_lookup_table import BaseLookUpTable
from search_space.choices import Arch
from search_space.cost_model import AdditiveCost, CostModel, GatedCost, GatedTerm
from search_space.layers import ModuleList
from search_space.mutables import Decision, InputChoice, LayerChoice, observing
from search_space.searchable import Searchable

COUNTED_METRICS = ("flops", "params")


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
    """Prune a freshly built supernet to ``arch`` (in place) and wrap it; the supernet is not usable after."""
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

    def __init__(self, network: Searchable, input_shape: Sequence[int], metrics: Sequence[str] = COUNTED_METRICS):
        unknown = [m for m in metrics if m not in COUNTED_METRICS]
        if unknown:
            valid = ", ".join(COUNTED_METRICS)
            raise ConfigError(f"lookup table metric {unknown[0]!r} is not supported; valid: {valid}")
        self.metrics, self.choices = tuple(metrics), network.choices()
        self.device = "analytic (nnabla graph count)"
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
        for site in network.mutables():
            if not isinstance(site.mutable, LayerChoice):
                continue  # choosing inputs computes nothing (sum / concat are free in this convention)
            label = site.mutable.decision.label
            counted = {
                value: count_module(module, seen.shapes[site.path][1:])
                for value, module in zip(site.mutable.candidate_names, site.mutable.candidates)
            }
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
        whole = count_network(network, arch0, input_shape)
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
        rng = np.random.default_rng(0)
        for _ in range(samples):
            arch = self.choices.sample(rng)
            whole = count_network(network, arch, input_shape)
            for m in self.metrics:
                if not np.isclose(whole[m], self.predict(arch, m), rtol=1e-9, atol=1e-6):
                    raise ArchitectureError(
                        f"the costs of this space are not additive per decision ({m} of {arch}: counted "
                        f"{whole[m]:.6g}, table {self.predict(arch, m):.6g}); give the space its own lookup table"
                    )

    def predict(self, arch: Mapping[str, Any], metric: str) -> float:
        """Cost of one architecture."""
        return self.cost_model(metric).cost(self.choices.validate(arch))

    def predict_batch(self, archs: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray:
        """``predict`` over many architectures."""
        model = self.cost_model(metric)
        return np.asarray([model.cost(self.choices.validate(a)) for a in archs], dtype=np.float64)

    def cost_model(self, metric: str) -> CostModel:
        """The table as a plain-data cost model (``GatedCost`` when input choices decide what runs)."""
        if metric not in self.models:
            raise ConfigError(f"lookup table has no metric {metric!r}; valid: {', '.join(self.metrics)}")
        return self.models[metric]

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form of a macro space's table (device, metrics, base, info_table, choices), plus the gated
        cost models when there are gates."""
        out = BaseLookUpTable.to_dict(self)
        if self.gates:
            out["cost_models"] = {m: self.models[m].to_dict() for m in self.metrics}
        return out

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


def count_network(network: Searchable, arch: Mapping[str, Any], input_shape: Sequence[int]) -> Dict[str, float]:
    """FLOPs / params of the graph ``arch`` computes in the supernet (sample mode)."""
    saved = network.active_arch()
    try:
        network.set_active(arch)
        return count_module(network, tuple(input_shape))
    finally:
        network.set_active(saved)
