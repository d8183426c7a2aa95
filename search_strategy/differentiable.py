"""Derive the architecture from learned architecture parameters (DARTS / GDAS / FBNet), repaired into budget."""

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from core.errors import ConfigError
from core.registries import SEARCH_STRATEGIES
from core.typed import PositiveInt
from search_space.choices import Arch, Categorical, SearchSpaceChoices, Subset, arch_key
from search_strategy.base import BaseSearchStrategy, Budget, Evaluate, Progress, SearchParams, SearchResult


@dataclass(frozen=True)
class DifferentiableSearchParams(SearchParams):
    """Differentiable-search config section."""

    #: in-budget candidates drawn to repair an over-budget derived architecture (the most probable one wins)
    repair_samples: PositiveInt = 256


def most_probable(choice: Categorical, probs: Sequence[float], exclude: Sequence[Any] = ()) -> Any:
    """Argmax value of a choice, ignoring ``exclude`` (DARTS: the Zero op) unless nothing else is left;
    for a Subset the top-k inputs (any-of-n: those with p > 0.5)."""
    p = np.asarray(probs, dtype=np.float64)
    if isinstance(choice, Subset):
        if choice.k is None:
            return tuple(int(i) for i in np.flatnonzero(p > 0.5))
        return tuple(sorted(int(i) for i in np.argsort(-p, kind="stable")[: choice.k]))
    allowed = [i for i, v in enumerate(choice.values) if v not in exclude] or list(range(len(choice)))
    return choice.values[max(allowed, key=lambda i: p[i])]


def derive_arch(
    choices: SearchSpaceChoices,
    probabilities: Mapping[str, Sequence[float]],
    exclude: Mapping[str, Sequence[Any]] | None = None,
    gates: Mapping[str, Mapping[int, Sequence[str]]] | None = None,
) -> Arch:
    """The most probable architecture: per label its argmax value (never an ``exclude``d one if another is left).

    An input choice whose inputs gate other choices (``gates[label][i]`` = the labels that run only if input
    ``i`` is chosen: a cell node's incoming edges) ranks input ``i`` by its own probability times its gated
    choices' strongest non-excluded probability, so a DARTS node keeps the two incoming edges with the
    strongest operations other than Zero (times the learned edge weights, as in PC-DARTS).
    """
    exclude, gates = exclude or {}, gates or {}
    arch: Arch = {}
    for label, choice in choices.items():
        probs = np.asarray(probabilities[label], dtype=np.float64)
        for i, gated in gates.get(label, {}).items():
            for other in gated:
                values = choices[other].values
                kept = [k for k, v in enumerate(values) if v not in exclude.get(other, ())] or range(len(values))
                probs[int(i)] *= max(float(probabilities[other][k]) for k in kept)
        arch[label] = most_probable(choice, probs, exclude.get(label, ()))
    return arch


def log_probability(choices: SearchSpaceChoices, probs: Mapping[str, Sequence[float]], arch: Arch) -> float:
    """Log-probability of ``arch`` under independent per-label distributions (per-input for Subsets)."""
    total = 0.0
    for label, choice in choices.items():
        p = np.clip(np.asarray(probs[label], dtype=np.float64), 1e-12, 1.0)
        if isinstance(choice, Subset):
            chosen = set(arch[label])
            if choice.k is None:
                total += sum(math.log(p[i] if i in chosen else 1.0 - min(p[i], 1 - 1e-12)) for i in range(choice.n))
            else:
                total += sum(math.log(p[i]) for i in chosen)
        else:
            total += math.log(p[choice.index(arch[label])])
    return total


@SEARCH_STRATEGIES.register("differentiable")
class DifferentiableSearch(BaseSearchStrategy):
    """The most probable architecture under the learned distribution; if over budget, the most probable of
    ``repair_samples`` in-budget draws that keep as many of the most confident decisions as possible."""

    Params = DifferentiableSearchParams
    needs_arch_probabilities = True

    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Evaluate the derived (or repaired) architecture and return it."""
        probs = (hints or {}).get("probabilities")
        if not probs or set(probs) != set(choices):
            raise ConfigError(
                "search_strategy_agent: differentiable needs the learned architecture probabilities of every label; "
                "train with training_strategy_agent: differentiable"
            )
        tracker = self.tracker(evaluate, budget, progress)
        arch = derive_arch(choices, probs, hints.get("exclude"), hints.get("gates"))
        if not budget.within(arch):
            arch = self.repair(choices, probs, arch, budget, rng, tracker)
        tracker.evaluate(arch)
        return tracker.result()

    def repair(
        self,
        choices: SearchSpaceChoices,
        probs: Mapping[str, Sequence[float]],
        arch: Arch,
        budget: Budget,
        rng: np.random.Generator,
        tracker: Any,
    ) -> Arch:
        """Free the least confident decisions one by one until in-budget completions exist; keep the likeliest."""
        confidence = {label: float(np.max(probs[label])) for label in choices}
        order = sorted(choices, key=lambda label: confidence[label])  # least confident first
        draws: Dict[str, Arch] = {}
        for n_free in range(1, len(order) + 1):
            fixed = {label: [arch[label]] for label in order[n_free:]}
            for _ in range(self.params.repair_samples):
                candidate = self.sample_in_budget(choices, budget, rng, tracker, allowed=fixed, tries=4)
                if candidate is None:
                    break
                draws[arch_key(candidate)] = candidate
            if draws:
                return max(draws.values(), key=lambda a: log_probability(choices, probs, a))
        return self.sample_in_budget(choices, budget, rng, tracker)  # raises when nothing fits at all
