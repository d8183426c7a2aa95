"""Random search: evaluate ``samples`` distinct random architectures within budget, keep the best."""

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from core.registries import SEARCH_STRATEGIES
from core.typed import PositiveInt
from search_space.choices import SearchSpaceChoices
from search_strategy.base import BaseSearchStrategy, Budget, Evaluate, Progress, SearchParams, SearchResult


@dataclass(frozen=True)
class RandomSearchParams(SearchParams):
    """Random-search config section."""

    #: distinct architectures evaluated (fewer if the in-budget space is smaller)
    samples: PositiveInt = 100


@SEARCH_STRATEGIES.register("random")
class RandomSearch(BaseSearchStrategy):
    """Uniform random sampling among the in-budget architectures; every arch is evaluated at most once."""

    Params = RandomSearchParams

    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Evaluate up to ``samples`` distinct in-budget random architectures and return the best."""
        tracker = self.tracker(evaluate, budget, progress)
        while len(tracker) < self.params.samples:
            arch = self.sample_new(choices, budget, rng, tracker)
            if arch is None:
                break
            tracker.evaluate(arch, generation=0)
        return tracker.result()
