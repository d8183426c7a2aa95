"""Evolutionary search (SPOS / OSNASLib style): top-k parents, per-label mutation and uniform crossover."""

from dataclasses import dataclass
from typing import Callable, List

import numpy as np

from core.errors import ConfigError
from core.registries import SEARCH_STRATEGIES
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

Breed = Callable[[List[Arch], SearchSpaceChoices, np.random.Generator], Arch]


@dataclass(frozen=True)
class EvolutionParams(SearchParams):
    """Evolution config section; at most ``population * generations`` evaluations in all."""

    #: architectures evaluated per generation (generation 0 is uniform random within budget)
    population: int = 20
    #: generations including the random initial one
    generations: int = 10
    #: top-k of everything evaluated so far kept as parents of the next generation (elitism)
    parents: int = 5
    #: per-label probability of resampling the value when mutating
    mutation_prob: float = 0.1
    #: share of each new generation made by mutation; the rest by uniform crossover of two parents
    mutation_ratio: float = 0.5


@SEARCH_STRATEGIES.register("evolution")
class EvolutionSearch(BaseSearchStrategy):
    """Evolution over architectures; over-budget or already evaluated children are rejected and redrawn."""

    Params = EvolutionParams

    def validate_params(self) -> None:
        """Check population/generations >= 1, parents in 1..population, probabilities in [0, 1]."""
        super().validate_params()
        p = self.params
        self.require_positive("population", "generations")
        if not 1 <= p.parents <= p.population:
            raise ConfigError(f"search_strategy.parents: must be in 1..population ({p.population}), got {p.parents}")
        for name in ("mutation_prob", "mutation_ratio"):
            value = getattr(p, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"search_strategy.{name}: must be in [0, 1], got {value}")

    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
    ) -> SearchResult:
        """Random initial population, then ``generations - 1`` rounds of selection, mutation and crossover."""
        p = self.params
        tracker = self.tracker(evaluate, budget, progress)
        for _ in range(p.population):
            arch = self.sample_new(choices, budget, rng, tracker)
            if arch is None:
                return tracker.result()
            tracker.evaluate(arch, generation=0)
        n_mutation = int(round(p.mutation_ratio * p.population))
        for generation in range(1, p.generations):
            parents = [entry["arch"] for entry in tracker.top(p.parents)]
            exhausted = {"mutate": False, "crossover": False}  # parents are fixed within a generation
            for i in range(p.population):
                name = "mutate" if i < n_mutation else "crossover"
                child = None
                if not exhausted[name]:
                    child = self._new_child(getattr(self, name), parents, choices, budget, rng, tracker)
                    exhausted[name] = child is None
                if child is None:
                    child = self.sample_new(choices, budget, rng, tracker)
                if child is None:
                    return tracker.result()
                tracker.evaluate(child, generation=generation)
        return tracker.result()

    def mutate(self, parents: List[Arch], choices: SearchSpaceChoices, rng: np.random.Generator) -> Arch:
        """A random parent with each label resampled uniformly with probability ``mutation_prob``."""
        parent = parents[int(rng.integers(len(parents)))]
        child: Arch = {}
        for label, cat in choices.items():
            resample = rng.random() < self.params.mutation_prob
            child[label] = cat.values[int(rng.integers(len(cat)))] if resample else parent[label]
        return child

    def crossover(self, parents: List[Arch], choices: SearchSpaceChoices, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each label taken from one of two distinct random parents with equal odds."""
        if len(parents) < 2:
            return dict(parents[0])
        i = int(rng.integers(len(parents)))
        j = int(rng.integers(len(parents) - 1))
        a, b = parents[i], parents[j + 1 if j >= i else j]
        take_a = rng.random(len(choices)) < 0.5
        return {label: a[label] if first else b[label] for label, first in zip(choices, take_a)}

    def _new_child(
        self,
        breed: Breed,
        parents: List[Arch],
        choices: SearchSpaceChoices,
        budget: Budget,
        rng: np.random.Generator,
        tracker: SearchTracker,
    ) -> Arch | None:
        """A bred child that is new and within budget, or None after ``max_sample_tries`` attempts."""
        for _ in range(self.params.max_sample_tries):
            child = breed(parents, choices, rng)
            if not tracker.seen(child) and budget.within(child):
                return child
        return None
