"""Search-strategy contract: Budget, SearchResult, the per-search tracker and BaseSearchStrategy (no nnabla)."""

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Tuple

import numpy as np

from core.errors import ArchitectureError, ConfigError
from core.pareto import pareto_front
from core.suggest import did_you_mean
from core.typed import PositiveInt, check_ranges
from search_space.choices import Arch, SearchSpaceChoices, arch_key
from search_strategy.sampler import Allowed, BudgetSampler, CostModel

Evaluate = Callable[[Arch], Mapping[str, float]]
Progress = Callable[[Dict[str, Any]], None]
#: restrictions with at most this many in-budget architectures are enumerated instead of sampled
SMALL_SET = 64


@dataclass(frozen=True)
class SearchParams:
    """Fields every strategy's Params shares; subclass it to add the strategy's own fields."""

    #: key of the metrics returned by ``evaluate(arch)`` that the search maximises
    objective: str = "accuracy"
    #: random draws tried to find one new architecture within budget before giving up
    max_sample_tries: PositiveInt = 1000


@dataclass(frozen=True)
class Budget:
    """A hardware constraint ``cost(arch) <= target`` on ``metric``; all None means unconstrained.

    ``additive`` (optional) is the cost as a plain-data sum of terms (``AdditiveCost``, or ``GatedCost`` whose terms
    count only while an input choice takes their input); it becomes ``cost`` when no cost function is given,
    and lets strategies draw in-budget architectures directly instead of by blind rejection.
    """

    metric: str | None
    target: float | None
    cost: Callable[[Arch], float] | None = None
    additive: CostModel | None = None
    #: BudgetSampler per search space (keyed by id, the space kept alive beside it)
    _samplers: Dict[int, Tuple[SearchSpaceChoices, BudgetSampler]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.cost is None and self.additive is not None:
            object.__setattr__(self, "cost", self.additive.cost)
        if self.target is not None and (self.metric is None or self.cost is None):
            raise ConfigError(f"a budget target ({self.target}) needs both a metric name and a cost function")

    @classmethod
    def unconstrained(cls) -> "Budget":
        """A budget that admits every architecture."""
        return cls(None, None, None)

    @property
    def constrained(self) -> bool:
        """True when a target is set."""
        return self.target is not None

    def cost_of(self, arch: Arch) -> float | None:
        """The architecture's cost, or None without a cost function."""
        return None if self.cost is None else float(self.cost(arch))

    def allows(self, cost: float | None) -> bool:
        """True when a cost fits the target (always without a target; a NaN cost never fits)."""
        return self.target is None or (cost is not None and cost <= self.target)

    def within(self, arch: Arch) -> bool:
        """True when the architecture fits the budget (always when unconstrained)."""
        return self.target is None or self.allows(self.cost_of(arch))

    def sampler(self, choices: SearchSpaceChoices) -> BudgetSampler:
        """The cached sampler of ``choices`` under this budget: budget-aware when additive, else plain uniform."""
        cached = self._samplers.get(id(choices))
        if cached is not None and cached[0] is choices:
            return cached[1]
        exact = self.additive is not None and self.constrained
        sampler = BudgetSampler(choices, self.additive if exact else None, self.target if exact else None)
        self._samplers[id(choices)] = (choices, sampler)
        return sampler


@dataclass
class SearchResult:
    """What a search returns: the best in-budget architecture, its metrics and the full history."""

    best_arch: Arch
    #: the objective and every other metric of the best arch, plus its cost under the budget's metric name
    best_metrics: Dict[str, float]
    #: one entry per evaluated architecture: {"arch", "metrics", "cost", "generation"}
    history: List[Dict[str, Any]]
    evaluations: int
    #: multi-objective searches: the history entries on the Pareto front of objective vs cost, cheapest first
    front: List[Dict[str, Any]] | None = None
    #: files the agent writes into the run directory as they are, ``{name: bytes}`` (e.g. a trained generator's
    #: ``generator.npz``); not part of ``to_dict``
    artifacts: Dict[str, bytes] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready data (numpy scalars turned into Python numbers)."""
        return {
            "best_arch": _plain(self.best_arch),
            "best_metrics": _plain(self.best_metrics),
            "history": _plain(self.history),
            "evaluations": int(self.evaluations),
            **({} if self.front is None else {"front": _plain(self.front)}),
        }


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class SearchTracker:
    """Per-search bookkeeping: evaluation cache keyed by ``arch_key``, history, best in budget, progress calls."""

    def __init__(self, evaluate: Evaluate, budget: Budget, objective: str, progress: Progress | None = None):
        self._evaluate = evaluate
        self.budget = budget
        self.objective = objective
        self._progress = progress
        self._cache: Dict[str, Dict[str, Any]] = {}
        self.history: List[Dict[str, Any]] = []
        self._best: Dict[str, Any] | None = None
        #: restrictions (sampler id, key) whose every in-budget architecture was evaluated; stays true as the
        #: cache only grows
        self.exhausted: set = set()

    def __len__(self) -> int:
        return len(self.history)

    def seen(self, arch: Arch) -> bool:
        """True when the architecture was evaluated already."""
        return arch_key(arch) in self._cache

    def score(self, entry: Mapping[str, Any]) -> float:
        """The objective of a history entry (NaN ranks last)."""
        value = entry["metrics"][self.objective]
        return -math.inf if math.isnan(value) else value

    def evaluate(self, arch: Arch, generation: int = 0) -> Dict[str, Any]:
        """Evaluate an in-budget architecture once (later calls hit the cache) and return its history entry."""
        key = arch_key(arch)
        if key in self._cache:
            return self._cache[key]
        cost = self.budget.cost_of(arch)
        if not self.budget.allows(cost):
            raise ArchitectureError(
                f"the search strategy asked to evaluate an architecture over budget ({self.budget.metric} {cost:.6g} > "
                f"{self.budget.target:.6g}); a strategy must draw through sample_in_budget or check budget.within"
            )
        metrics = {str(k): float(v) for k, v in self._evaluate(dict(arch)).items()}
        if self.objective not in metrics:
            raise ConfigError(
                f"search_strategy.objective: {self.objective!r} is not among the evaluated metrics "
                f"{sorted(metrics)}{did_you_mean(self.objective, metrics)}"
            )
        entry = {"arch": dict(arch), "metrics": metrics, "cost": cost, "generation": int(generation)}
        self._cache[key] = entry
        self.history.append(entry)
        if self._best is None or self.score(entry) > self.score(self._best):
            self._best = entry
        if self._progress is not None:
            self._progress(
                {
                    "evaluations": len(self.history),
                    "generation": int(generation),
                    "objective": metrics[self.objective],
                    "cost": cost,
                    "best_objective": self._best["metrics"][self.objective],
                }
            )
        return entry

    def front(self) -> List[Dict[str, Any]]:
        """The entries on the Pareto front of the objective (maximised) vs the cost (minimised), cheapest first."""
        costs = [math.nan if e["cost"] is None else e["cost"] for e in self.history]
        points = [(self.score(e), c) for e, c in zip(self.history, costs)]
        return [dict(self.history[i]) for i in pareto_front(points)]

    def top(self, k: int) -> List[Dict[str, Any]]:
        """The ``k`` best history entries, best first (ties: earliest evaluated first)."""
        return sorted(self.history, key=self.score, reverse=True)[:k]

    def result(self) -> SearchResult:
        """The SearchResult of everything evaluated so far."""
        if self._best is None:
            raise ArchitectureError("the search evaluated no architecture")
        best_metrics = dict(self._best["metrics"])
        if self.budget.metric is not None and self._best["cost"] is not None:
            best_metrics[self.budget.metric] = self._best["cost"]
        history = [{**e, "arch": dict(e["arch"]), "metrics": dict(e["metrics"])} for e in self.history]
        return SearchResult(dict(self._best["arch"]), best_metrics, history, len(self.history))


class BaseSearchStrategy(abc.ABC):
    """Searches a SearchSpaceChoices through an ``evaluate(arch) -> metrics`` callable, maximising the objective.

    Invariant: an architecture over budget is never evaluated and never returned. ``progress`` is called once
    per evaluation with ``{"evaluations", "generation", "objective", "cost", "best_objective"}``.
    """

    Params: ClassVar[type] = SearchParams

    def __init__(self, params: Any | None = None):
        self.params = self.Params() if params is None else params
        if not isinstance(self.params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__name__}, got {type(self.params).__name__}")
        self.validate_params()

    def validate_params(self) -> None:
        """Raise a one-line ConfigError for a bad param (ranges come from the Params annotations); extend it."""
        check_ranges(self.params, "search_strategy")
        p = self.params
        if not isinstance(p.objective, str) or not p.objective:
            raise ConfigError(f"search_strategy.objective: must be a non-empty metric name, got {p.objective!r}")

    @abc.abstractmethod
    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Run the search and return the best in-budget architecture found.

        ``hints`` carries read-only extras a strategy may use, e.g. ``{"probabilities": {label: [p, ...]}}``
        (the learned architecture distribution, per value of a choice or per input of a Subset).
        """

    def tracker(self, evaluate: Evaluate, budget: Budget, progress: Progress | None = None) -> SearchTracker:
        """A fresh tracker for one search call."""
        return SearchTracker(evaluate, budget, self.params.objective, progress)

    def sample_new(
        self, choices: SearchSpaceChoices, budget: Budget, rng: np.random.Generator, tracker: SearchTracker
    ) -> Arch | None:
        """A uniformly random in-budget arch not yet evaluated (``sample_in_budget`` over the whole space).

        Returns None when ``max_sample_tries`` draws found only evaluated ones (the in-budget space looks
        exhausted); raises ArchitectureError when nothing within budget exists as far as the search can tell.
        """
        return self.sample_in_budget(choices, budget, rng, tracker)

    def sample_in_budget(
        self,
        choices: SearchSpaceChoices,
        budget: Budget,
        rng: np.random.Generator,
        tracker: SearchTracker,
        allowed: Allowed | None = None,
        tries: int | None = None,
    ) -> Arch | None:
        """A uniformly random in-budget arch, not yet evaluated, whose values lie in ``allowed`` (free if absent).

        An additive budget draws from the in-budget architectures directly (BudgetSampler); any other budget
        draws uniformly and rejects. A restriction with at most ``SMALL_SET`` candidates is enumerated, so its
        exhaustion is exact. Otherwise returns None after ``tries`` (default ``max_sample_tries``) draws of
        evaluated or over-budget archs. Returns None when nothing in ``allowed`` fits; raises ArchitectureError
        when ``allowed`` is None and the budget admits no architecture as far as the search can tell.
        """
        tries = self.params.max_sample_tries if tries is None else tries
        sampler = budget.sampler(choices)
        key = sampler.key(allowed)
        members = sampler.members(key, SMALL_SET)
        if members is not None:
            if not members and allowed is None:
                raise _no_fit(budget, f"the cheapest costs {sampler.min_cost():.6g}")
            return self._pick_new(members, (id(sampler), key), budget, rng, tracker, allowed is None)
        cheapest = math.inf
        for _ in range(tries):
            arch = sampler.sample(rng, allowed)
            if arch is None:  # only an additive budget knows that nothing fits
                if allowed is not None:
                    return None
                raise _no_fit(budget, f"the cheapest costs {sampler.min_cost():.6g}")
            if tracker.seen(arch):
                continue
            # the budget's own cost has the last word (an additive model that disagrees only loses draws)
            cost = budget.cost_of(arch)
            if budget.allows(cost):
                return arch
            if cost is not None and cost < cheapest:
                cheapest = cost
        if allowed is not None or len(tracker) or budget.additive is not None or not budget.constrained:
            return None
        raise _no_fit(budget, f"{tries} random samples, the cheapest seen costs {cheapest:.6g}")

    def _pick_new(
        self,
        members: List[Arch],
        mark: Tuple[int, Any],
        budget: Budget,
        rng: np.random.Generator,
        tracker: SearchTracker,
        whole: bool,
    ) -> Arch | None:
        """A uniformly random member that is new and within budget (a small set is exhausted exactly)."""
        if mark not in tracker.exhausted:
            for k in rng.permutation(len(members)).tolist():
                if not tracker.seen(members[k]) and budget.within(members[k]):
                    return dict(members[k])
            tracker.exhausted.add(mark)
        if not whole or len(tracker):
            return None
        costs = [c for c in map(budget.cost_of, members) if c is not None]
        raise _no_fit(budget, f"the cheapest costs {min(costs, default=math.nan):.6g}")


def _no_fit(budget: Budget, detail: str) -> ArchitectureError:
    """The one-line error of a budget that admits no architecture."""
    return ArchitectureError(
        f"no architecture within budget {budget.metric} <= {budget.target:g} ({detail}); "
        f"raise the target or shrink the space"
    )
