"""What any network with mutables offers a strategy: choices, path switching, modes, arch parameters, groups.

``Searchable`` is a plain mixin (not a Module), so none of its methods pays nnabla's per-call scope
wrapper: switching paths every training step costs microseconds. It finds the mutables anywhere in the
module tree once (on first use), binds labels to shared decisions, and derives everything from them.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Mapping, Tuple

import nnabla as nn

from search_space.choices import Arch, SearchSpaceChoices
from search_space.mutables import (
    Decision,
    GateHook,
    LayerChoice,
    Mutable,
    bind_decisions,
    decisions_choices,
    derived_arch,
    find_mutables,
    set_mode,
)

SHARED_GROUP = "shared"


@dataclass(frozen=True)
class Site:
    """One mutable in the tree: its path, and the (LayerChoice, candidate) choices it sits inside."""

    path: str
    mutable: Mutable
    inside: Tuple[Tuple[LayerChoice, int], ...]

    def on_path(self, indices: Mapping[str, int] | None = None) -> bool:
        """Whether every enclosing LayerChoice chose (or, per ``indices``, would choose) the candidate holding it."""
        indices = indices or {}
        return all(indices.get(outer.decision.label, outer.decision.index) == i for outer, i in self.inside)


def _sites(root: Any) -> List[Site]:
    """Every mutable with the enclosing choices it depends on (nested spaces)."""
    found = find_mutables(root)
    by_path = {path: m for path, m in found}
    sites = []
    for path, m in found:
        inside = []
        parts = path.split("/")
        for k in range(len(parts) - 2):  # an ancestor LayerChoice's candidate: <ancestor>/candidates/<i>/...
            outer = by_path.get("/".join(parts[: k + 1]))
            if isinstance(outer, LayerChoice) and parts[k + 1] == "candidates":
                inside.append((outer, int(parts[k + 2])))
        sites.append(Site(path, m, tuple(inside)))
    return sites


class Searchable:
    """Mixin for a Module holding mutables anywhere in its tree (the supernet of a search space)."""

    def _search_state(self) -> Tuple[List[Site], "OrderedDict[str, Decision]", SearchSpaceChoices]:
        state = self.__dict__.get("_searchable")
        if state is None:
            sites = _sites(self)
            decisions = bind_decisions(self)
            state = (sites, decisions, decisions_choices(decisions))
            self.__dict__["_searchable"] = state
        return state

    def mutables(self) -> List[Site]:
        """Every mutable of the network with its place."""
        return self._search_state()[0]

    def decisions(self) -> "OrderedDict[str, Decision]":
        """``{label: Decision}`` (mutables sharing a label share one)."""
        return self._search_state()[1]

    def choices(self) -> SearchSpaceChoices:
        """The space's decisions as plain data, derived once from the mutables."""
        return self._search_state()[2]

    def set_active(self, arch: Mapping[str, Any]) -> None:
        """Select the architecture ``arch`` (what sample mode computes)."""
        arch = self.choices().validate(arch)
        for label, d in self.decisions().items():
            d.index = d.choice.values.index(arch[label])

    def active_arch(self) -> Arch:
        """The architecture sample mode currently computes."""
        return {label: d.value for label, d in self.decisions().items()}

    def set_gates(self, gates: Mapping[str, Tuple[str, int]]) -> None:
        """Tell which LayerChoices run only while an input choice takes their output (``{path: (label, input)}``,
        e.g. ``ObservedLookUpTable.path_gates``): ``active_groups`` then leaves out the ones not taken."""
        paths = {s.path for s in self.mutables()}
        unknown = [p for p in gates if p not in paths]
        if unknown:
            raise ValueError(f"set_gates: {unknown[0]!r} is not a mutable of this network")
        self.__dict__["_gates"] = {p: (self.decisions()[label], int(i)) for p, (label, i) in gates.items()}

    def set_mode(self, mode: str, gate_hook: GateHook | None = None) -> None:
        """``sample`` | ``full`` | ``max`` | ``gates`` for every decision."""
        set_mode(self.decisions(), mode, gate_hook)

    def arch_parameters(self) -> "OrderedDict[str, nn.Variable]":
        """``{label: alpha}``, one per label, created once: the same Variables on every call."""
        return OrderedDict((label, d.ensure_alpha()) for label, d in self.decisions().items())

    def derived_arch(self) -> Arch:
        """The architecture the architecture parameters pick (argmax / top-k inputs)."""
        return derived_arch(self.decisions())

    def graph_key(self) -> Hashable:
        """What the computation graph depends on: rebuild it when this changes."""
        return tuple(d.graph_key() for d in self.decisions().values())

    def weight_groups(self) -> "OrderedDict[str, OrderedDict[str, nn.Variable]]":
        """Trainable weights partitioned into ``shared`` and one group per (LayerChoice, candidate).

        Optimizers keep one state per group, so a candidate that is not on the path is neither decayed
        nor moved by stale momentum. Architecture parameters are in no group: they are no Module parameter.
        """
        owner: Dict[int, str] = {}
        for site in self.mutables():  # outer choices first: a nested choice's candidates are its own groups
            if isinstance(site.mutable, LayerChoice):
                for c, module in enumerate(site.mutable.candidates):
                    for v in module.get_parameters(grad_only=True).values():
                        owner[id(v)] = self.group_name(site.path, c)
        groups: OrderedDict[str, OrderedDict[str, nn.Variable]] = OrderedDict()
        groups[SHARED_GROUP] = OrderedDict()
        for name, v in self.get_parameters(grad_only=True).items():
            groups.setdefault(owner.get(id(v), SHARED_GROUP), OrderedDict())[name] = v
        return groups

    def weight_parameters(self) -> "OrderedDict[str, nn.Variable]":
        """Every trainable weight (no architecture parameter)."""
        out: OrderedDict[str, nn.Variable] = OrderedDict()
        for g in self.weight_groups().values():
            out.update(g)
        return out

    def active_groups(self, mode: str | None = None, indices: Mapping[str, int] | None = None) -> List[str]:
        """The weight groups a step computes: the chosen path (sample / max) or every candidate (full).

        ``mode`` and ``indices`` (label -> candidate index) override the decisions' own, for strategies whose
        gates pick the candidates (e.g. one Gumbel sample per step).
        """
        names = [SHARED_GROUP]
        indices = indices or {}
        gates = self.__dict__.get("_gates", {})
        for site in self.mutables():
            m = site.mutable
            if not isinstance(m, LayerChoice) or not site.on_path(indices):
                continue
            d = m.decision
            gate = gates.get(site.path)
            if gate is not None and (mode or gate[0].mode) == "sample":
                g = gate[0]
                if gate[1] not in (g.choice.values[indices[g.label]] if g.label in indices else g.value):
                    continue  # an input not taken: its output is not read, nothing of it is trained
            if (mode or d.mode) == "full":
                names.extend(self.group_name(site.path, c) for c in range(len(m.candidate_names)))
                continue
            if d.label in indices:
                index = indices[d.label]
            elif (mode or d.mode) == "max":
                index = d.choice.values.index(derived_arch({d.label: d})[d.label])
            else:
                index = d.index
            names.append(self.group_name(site.path, index))
        return names

    @staticmethod
    def group_name(path: str, candidate_index: int) -> str:
        """Weight-group name of one candidate of the LayerChoice at ``path``."""
        return f"{path}/{candidate_index}"
