"""Strict-fairness single-path training (FairNAS: Chu, Zhang, Xu, "FairNAS: Rethinking Evaluation Fairness of
Weight Sharing Neural Architecture Search", ICCV 2021, arXiv:1907.01845).

Each optimizer step trains ``m`` paths on the same batch, their gradients summed into one update (the loop's
``passes``). Every choice draws its values from a *stream of rounds*: a round is a fresh random permutation of
the choice's units, and each pass takes the next units of the stream, so every unit is trained exactly once per
round. With ``m`` = the number of candidates of the largest choice (the default), a choice with ``m`` candidates
uses each candidate exactly once per step, as in FairNAS. What the units of a choice are:

- a LayerChoice of ``c`` candidates: the candidates, one per pass (a round takes ``c`` passes). A choice with
  fewer candidates than ``m`` continues its stream across the step: a new round starts inside the step and lists
  first the candidates the step has used least, so within a step no candidate is used twice before every other
  one was used once, and across steps every round still covers every candidate exactly once;
- an InputChoice of ``k`` of ``n`` inputs: the inputs, ``k`` distinct ones per pass (every input once per round
  of ``ceil(n / k)`` passes; the pass across a round boundary takes the rest of the round and the first inputs of
  the next that it does not hold yet);
- an InputChoice of any number of ``n`` inputs: ``n`` two-unit streams (input taken / not taken), so each input is
  taken in exactly half of the passes of every two.

A choice's stream moves only in the passes that compute it: a LayerChoice inside a candidate another choice did
not pick, or a cell edge whose node does not take its output (``Searchable.set_gates``), keeps its next value for
a pass that trains it. So the coverage holds for what is trained, in nested and cell spaces too.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

import numpy as np

from core.registries import TRAINING_STRATEGIES
from core.typed import PositiveInt
from search_space.base_supernet import BaseSupernet
from search_space.choices import Subset
from search_space.mutables import Decision, LayerChoice
from training_strategy.base import BaseTrainingStrategy, StrategyContext


class UnitStream:
    """The order in which ``size`` units are trained: rounds of every unit once, ``take`` distinct units a pass."""

    def __init__(self, size: int, take: int):
        self.size, self.take = size, take
        #: the rest of the current round (plus, once a pass needed it, the whole next round)
        self.pending: List[int] = []
        self.counts = np.zeros(size, np.int64)

    def passes_per_round(self) -> int:
        """Passes that cover every unit once."""
        return math.ceil(self.size / self.take) if self.take else 1

    def peek(self, rng: np.random.Generator) -> List[int]:
        """The units the next pass takes (drawing the next round when the current one runs short)."""
        if len(self.pending) < self.take:
            head = set(self.pending)
            # units of the pass's value go last (the value's units stay distinct), then the least used this step
            order = rng.permutation(self.size).tolist()
            self.pending += sorted(order, key=lambda u: (u in head, int(self.counts[u])))
        return self.pending[: self.take]

    def consume(self) -> None:
        """The peeked units were trained."""
        for u in self.pending[: self.take]:
            self.counts[u] += 1
        del self.pending[: self.take]


class FairChoice:
    """The fair value stream of one decision (see the module docstring for its units)."""

    def __init__(self, decision: Decision):
        self.decision = decision
        choice = decision.choice
        if not isinstance(choice, Subset):
            self.streams = [UnitStream(len(choice.values), 1)]
        elif choice.k is None:
            self.streams = [UnitStream(2, 1) for _ in range(choice.n)]
        else:
            self.streams = [UnitStream(choice.n, choice.k)] if choice.k else []

    def passes_per_round(self) -> int:
        """Passes that cover every unit of every stream once."""
        return max([s.passes_per_round() for s in self.streams], default=1)

    def new_step(self) -> None:
        """Start counting the units a step uses afresh."""
        for s in self.streams:
            s.counts[:] = 0

    def peek(self, rng: np.random.Generator) -> int:
        """Index (into the choice's values) of the next value."""
        choice = self.decision.choice
        units = [s.peek(rng) for s in self.streams]
        if not isinstance(choice, Subset):
            return units[0][0]
        if choice.k is None:
            return choice.values.index(tuple(i for i, u in enumerate(units) if u[0] == 1))
        return choice.values.index(tuple(sorted(units[0])) if units else ())

    def consume(self) -> None:
        """The peeked value was trained."""
        for s in self.streams:
            s.consume()


@dataclass(frozen=True)
class FairParams:
    """FairNAS config section."""

    #: paths per step (null: m = the passes the largest choice needs to use each of its candidates once)
    paths: PositiveInt | None = None


@TRAINING_STRATEGIES.register("fair")
class FairSampling(BaseTrainingStrategy):
    """Each step trains m paths on one batch that together use every candidate of every choice once."""

    Params = FairParams

    def __init__(self, params: FairParams):
        super().__init__(params)
        self.fair: Dict[str, FairChoice] = {}
        self.paths: List[Dict[str, int]] = []
        self.m = 1

    def setup(self, supernet: BaseSupernet, context: StrategyContext) -> None:
        """Sample mode, one value stream per decision, ``m``."""
        supernet.set_mode("sample")
        self.fair = {label: FairChoice(d) for label, d in supernet.decisions().items()}
        self.m = self.params.paths or max([c.passes_per_round() for c in self.fair.values()], default=1)
        context.logger.info("[fair] %d paths per step", self.m)

    def before_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """Draw the step's m paths from the streams; the network computes the first."""
        if not self.fair:
            raise RuntimeError("FairSampling.setup() was not called")
        for c in self.fair.values():
            c.new_step()
        self.paths = []
        for _ in range(self.m):
            indices = {label: c.peek(rng) for label, c in self.fair.items()}
            for label in computed_labels(supernet, indices):
                self.fair[label].consume()
            self.paths.append(indices)
        self._activate(supernet, self.paths[0])

    def _activate(self, supernet: BaseSupernet, indices: Mapping[str, int]) -> None:
        supernet.set_active({label: d.choice.values[indices[label]] for label, d in supernet.decisions().items()})

    def passes(self, supernet: BaseSupernet):
        """One pass per path of the step."""
        for indices in self.paths:
            self._activate(supernet, indices)
            yield

    def active_groups(self, supernet: BaseSupernet) -> List[str]:
        """Every weight group one of the step's paths trains."""
        groups: Dict[str, None] = {}
        for indices in self.paths:
            groups.update(dict.fromkeys(supernet.active_groups(mode="sample", indices=indices)))
        return list(groups)

    def state_dict(self) -> Dict[str, Any]:
        """The rounds in flight: the units every stream has still to train."""
        return {"pending": {label: [list(s.pending) for s in c.streams] for label, c in self.fair.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict`` output (the same decisions and streams)."""
        pending = state["pending"]
        if set(pending) != set(self.fair):
            raise ValueError("its fair streams are not the network's labels")
        for label, c in self.fair.items():
            saved = pending[label]
            if len(saved) != len(c.streams):
                raise ValueError(f"label {label!r} has {len(saved)} fair streams, expected {len(c.streams)}")
            for s, units in zip(c.streams, saved):
                units = [int(u) for u in units]
                if any(not 0 <= u < s.size for u in units) or len(units) > 2 * s.size:
                    raise ValueError(f"label {label!r}: fair stream {units} is not of {s.size} units")
                s.pending = units


def computed_labels(supernet: BaseSupernet, indices: Mapping[str, int]) -> List[str]:
    """The labels a sample-mode pass of ``indices`` computes: a LayerChoice trained on the path (inside the chosen
    candidates, its input taken), an InputChoice on the path."""
    active = set(supernet.active_groups(mode="sample", indices=indices))
    found: Dict[str, None] = {}
    for site in supernet.mutables():
        label = site.mutable.decision.label
        if isinstance(site.mutable, LayerChoice):
            if supernet.group_name(site.path, indices[label]) in active:
                found[label] = None
        elif site.on_path(indices):
            found[label] = None
    return list(found)
