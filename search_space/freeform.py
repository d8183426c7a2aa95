"""Free-form spaces: any Searchable Module tree of LayerChoice / InputChoice, with no model or table to write.

- ``standalone(network, arch)``: the network of one architecture, derived from a freshly built supernet:
  every LayerChoice keeps only its chosen candidate and every InputChoice always takes its chosen inputs,
  so unchosen candidates (Zero ops included) are not in the module tree, its parameters or its graph.
- ``ObservedLookUpTable``: the cost of every (label, value), each candidate counted on the input shape it
  really receives (observed in a forward pass), plus the fixed base cost; checked against whole-network
  counts of random architectures, so a space whose costs are not additive is refused, not mispredicted.
"""

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Sequence

import nnabla as nn
import numpy as np
from nnabla.core.module import Module

from core.errors import ArchitectureError, ConfigError
from core.graph import untraced
from hardware.counter import count_module
from search_space.base_lookup_table import BaseLookUpTable
from search_space.choices import Arch
from search_space.cost_model import AdditiveCost
from search_space.layers import ModuleList
from search_space.mutables import Decision, LayerChoice
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


class StandaloneNetwork(Module):
    """The standalone network of one architecture (what is retrained, counted and exported)."""

    def __init__(self, network: Module, arch: Arch):
        self.net = network
        self.__dict__["arch"] = dict(arch)

    def call(self, x):
        return self.net(x)


def standalone(network: Searchable, arch: Mapping[str, Any]) -> StandaloneNetwork:
    """Prune a freshly built supernet to ``arch`` (in place) and wrap it; the supernet is not usable after."""
    network.set_active(arch)
    arch = network.active_arch()
    for site in network.mutables():
        m, d = site.mutable, site.mutable.decision
        if isinstance(m, LayerChoice):
            m.candidates = ModuleList([m.candidates[d.index]])
            m.__dict__["candidate_names"] = [d.value]
        m.__dict__["decision"] = FixedDecision(d.label, d.value)
    network.__dict__.pop("_searchable", None)
    return StandaloneNetwork(network, arch)


class ObservedLookUpTable:
    """Per-(label, value) costs counted on observed input shapes; ``predict`` = base + chosen values' costs."""

    def __init__(self, network: Searchable, input_shape: Sequence[int], metrics: Sequence[str] = COUNTED_METRICS):
        unknown = [m for m in metrics if m not in COUNTED_METRICS]
        if unknown:
            valid = ", ".join(COUNTED_METRICS)
            raise ConfigError(f"lookup table metric {unknown[0]!r} is not supported; valid: {valid}")
        self.metrics, self.choices = tuple(metrics), network.choices()
        self.device = "analytic (nnabla graph count)"
        shapes = observe_input_shapes(network, tuple(input_shape))
        self.info_table: Dict[str, Dict[str, List[float]]] = {m: {} for m in self.metrics}
        costs: Dict[str, Dict[str, Dict[Any, float]]] = {m: OrderedDict() for m in self.metrics}
        for label in self.choices:
            for m in self.metrics:
                costs[m][label] = {v: 0.0 for v in self.choices[label].values}
        for site in network.mutables():
            if not isinstance(site.mutable, LayerChoice):
                continue  # choosing inputs computes nothing (sum / concat are free in this convention)
            label = site.mutable.decision.label
            for value, module in zip(site.mutable.candidate_names, site.mutable.candidates):
                counted = count_module(module, shapes[site.path][1:])
                for m in self.metrics:
                    costs[m][label][value] += counted[m]
        arch0 = {label: c.values[0] for label, c in self.choices.items()}
        whole = count_network(network, arch0, input_shape)
        self.base = {m: whole[m] - sum(costs[m][label][arch0[label]] for label in self.choices) for m in self.metrics}
        self.models = {m: AdditiveCost(self.base[m], costs[m]) for m in self.metrics}
        for m in self.metrics:
            self.info_table[m] = {label: list(row.values()) for label, row in costs[m].items()}
        self._check_additive(network, input_shape)

    def _check_additive(self, network: Searchable, input_shape: Sequence[int], samples: int = 4) -> None:
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
        return self.additive_cost(metric).cost(self.choices.validate(arch))

    def additive_cost(self, metric: str) -> AdditiveCost:
        """The table as an additive cost model."""
        if metric not in self.models:
            raise ConfigError(f"lookup table has no metric {metric!r}; valid: {', '.join(self.metrics)}")
        return self.models[metric]

    # the same JSON form as a macro space's table (device, metrics, base, info_table, choices)
    to_dict = BaseLookUpTable.to_dict
    save = BaseLookUpTable.save


def observe_input_shapes(network: Searchable, input_shape: Sequence[int]) -> Dict[str, tuple]:
    """The input shape every LayerChoice receives (several forward passes reach nested choices)."""
    shapes: Dict[str, tuple] = {}
    sites = [s for s in network.mutables() if isinstance(s.mutable, LayerChoice)]
    rng = np.random.default_rng(0)
    saved = network.active_arch()
    try:
        for attempt in range(32):
            arch = {label: c.values[0] for label, c in network.choices().items()} if attempt == 0 else None
            network.set_active(arch or network.choices().sample(rng))
            for s in sites:
                s.mutable.__dict__["observed_shape"] = None
            was = network.training
            network.training = False
            with untraced():
                network(nn.Variable((1,) + tuple(input_shape)))
            network.training = was
            for s in sites:
                if s.mutable.observed_shape is not None and s.path not in shapes:
                    shapes[s.path] = s.mutable.observed_shape
            if len(shapes) == len(sites):
                return shapes
    finally:
        network.set_active(saved)
    missing = [s.path for s in sites if s.path not in shapes]
    raise ArchitectureError(f"LayerChoice {missing[0]!r} is never reached by a forward pass; it cannot be counted")


def count_network(network: Searchable, arch: Mapping[str, Any], input_shape: Sequence[int]) -> Dict[str, float]:
    """FLOPs / params of the graph ``arch`` computes in the supernet (sample mode)."""
    saved = network.active_arch()
    try:
        network.set_active(arch)
        return count_module(network, tuple(input_shape))
    finally:
        network.set_active(saved)
