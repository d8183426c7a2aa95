"""Evolutionary search (SPOS / OSNASLib style): top-k parents, per-label mutation and uniform crossover.

Children are drawn *within budget*: breeding only restricts which values each label may take (a parent's value,
or either of two parents' values) and ``sample_in_budget`` draws uniformly among the in-budget architectures
that respect the restriction, so no child is over budget and none is blindly rejected.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping

import numpy as np

from core.errors import ConfigError
from core.pareto import crowding_distance, non_dominated_sort
from core.registries import SEARCH_STRATEGIES
from core.typed import PositiveInt, Probability
from search_space.choices import Arch, SearchSpaceChoices
from search_strategy.base import (
    BaseSearchStrategy,
    Budget,
    Evaluate,
    Progress,
    SearchParams,
    SearchResult,
    SearchTracker,
)
from search_strategy.sampler import Allowed

#: a breeding operator: parents -> the values each label of the child may take (None: no new child possible)
Breed = Callable[[List[Arch], SearchSpaceChoices, np.random.Generator], Allowed | None]


@dataclass(frozen=True)
class EvolutionParams(SearchParams):
    """Evolution config section; at most ``population * generations`` evaluations in all."""

    #: architectures evaluated per generation (generation 0 is uniform random within budget)
    population: PositiveInt = 20
    #: generations including the random initial one
    generations: PositiveInt = 10
    #: top-k of everything evaluated so far kept as parents of the next generation (elitism)
    parents: PositiveInt = 5
    #: per-label probability of resampling the value (within budget) when mutating
    mutation_prob: Probability = 0.1
    #: share of each new generation made by mutation; the rest by uniform crossover of two parents
    mutation_ratio: Probability = 0.5
    #: parents: the best by the objective, or NSGA-II ranks of objective vs the budget metric's cost (``pareto``:
    #: the result also holds the Pareto front of everything evaluated)
    selection: Literal["objective", "pareto"] = "objective"


@SEARCH_STRATEGIES.register("evolution")
class EvolutionSearch(BaseSearchStrategy):
    """Evolution over architectures; children are drawn within budget, already evaluated ones are redrawn."""

    Params = EvolutionParams

    def validate_params(self) -> None:
        """The shared checks, then ``parents <= population``."""
        super().validate_params()
        p = self.params
        if p.parents > p.population:
            raise ConfigError(f"search_strategy.parents: must be in 1..population ({p.population}), got {p.parents}")

    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Random initial population, then ``generations - 1`` rounds of selection, mutation and crossover."""
        p = self.params
        if p.selection == "pareto" and budget.cost is None:
            raise ConfigError(
                "search_strategy.selection: pareto trades the objective against a cost, and the budget has none; "
                "give the search a cost model (hardware.info_metric with a lookup table)"
            )
        tracker = self.tracker(evaluate, budget, progress)
        for _ in range(p.population):
            arch = self.sample_new(choices, budget, rng, tracker)
            if arch is None:
                return self._result(tracker)
            tracker.evaluate(arch, generation=0)
        n_mutation = int(round(p.mutation_ratio * p.population))
        breeds: Dict[str, Breed] = {"mutate": self.mutation_space, "crossover": self.crossover_space}
        for generation in range(1, p.generations):
            parents = self.select_parents(tracker, p.parents)
            exhausted = {"mutate": False, "crossover": False}  # parents are fixed within a generation
            for i in range(p.population):
                name = "mutate" if i < n_mutation else "crossover"
                child = None
                if not exhausted[name]:
                    child = self._new_child(breeds[name], parents, choices, budget, rng, tracker)
                    exhausted[name] = child is None
                if child is None:
                    child = self.sample_new(choices, budget, rng, tracker)
                if child is None:
                    return self._result(tracker)
                tracker.evaluate(child, generation=generation)
        return self._result(tracker)

    def select_parents(self, tracker: SearchTracker, k: int) -> List[Arch]:
        """The ``k`` parents: the best by the objective, or (``pareto``) by non-dominated front, then crowding
        distance (NSGA-II: spread along the front), then evaluation order."""
        if self.params.selection == "objective":
            return [entry["arch"] for entry in tracker.top(k)]
        points = [(tracker.score(e), float(e["cost"])) for e in tracker.history]
        ranked: List[int] = []
        for front in non_dominated_sort(points):
            crowd = crowding_distance(points, front)
            ranked.extend(i for _, i in sorted(zip(crowd, front), key=lambda t: (-t[0], t[1])))
        return [tracker.history[i]["arch"] for i in ranked[:k]]

    def _result(self, tracker: SearchTracker) -> SearchResult:
        result = tracker.result()
        if self.params.selection == "pareto":
            result.front = tracker.front()
        return result

    def mutation_space(
        self, parents: List[Arch], choices: SearchSpaceChoices, rng: np.random.Generator
    ) -> Allowed | None:
        """A random parent's values, each label freed with probability ``mutation_prob`` (None: none freed)."""
        parent = parents[int(rng.integers(len(parents)))]
        free = rng.random(len(choices)) < self.params.mutation_prob
        if not free.any():
            return None
        return {label: (parent[label],) for label, f in zip(choices, free) if not f}

    def crossover_space(
        self, parents: List[Arch], choices: SearchSpaceChoices, rng: np.random.Generator
    ) -> Allowed | None:
        """Uniform crossover of two distinct random parents: each label takes either parent's value."""
        if len(parents) < 2:
            return None
        i = int(rng.integers(len(parents)))
        j = int(rng.integers(len(parents) - 1))
        a, b = parents[i], parents[j + 1 if j >= i else j]
        return {label: (a[label], b[label]) for label in choices}

    def _new_child(
        self,
        breed: Breed,
        parents: List[Arch],
        choices: SearchSpaceChoices,
        budget: Budget,
        rng: np.random.Generator,
        tracker: SearchTracker,
    ) -> Arch | None:
        """A new in-budget child of ``breed``, or None after ``max_sample_tries`` breedings gave none."""
        for _ in range(self.params.max_sample_tries):
            allowed = breed(parents, choices, rng)
            if allowed is not None:
                child = self.sample_in_budget(choices, budget, rng, tracker, allowed, tries=1)
                if child is not None:
                    return child
        return None
