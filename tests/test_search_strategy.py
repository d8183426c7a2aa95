"""Search strategies on a toy space with a brute-forced constrained optimum; no nnabla, no data."""

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from core.errors import ArchitectureError, ConfigError, UnknownComponentError
from core.registries import SEARCH_STRATEGIES
from core.typed import from_dict
from search_space.choices import Arch, Categorical, SearchSpaceChoices, arch_key
from search_space.cost_model import AdditiveCost
from search_strategy.base import Budget, SearchTracker
from search_strategy.evolution import EvolutionParams, EvolutionSearch
from search_strategy.random_search import RandomSearch, RandomSearchParams

ROOT = Path(__file__).resolve().parents[1]
LABELS, VALUES = 8, 4
_gen = np.random.default_rng(1234)
# better values cost more, so the unconstrained optimum (all last values) is over budget
SCORES = np.sort(_gen.uniform(0.0, 1.0, (LABELS, VALUES)), axis=1)
COSTS = np.sort(_gen.uniform(0.0, 1.0, (LABELS, VALUES)), axis=1)
CHOICES = SearchSpaceChoices({f"l{i}": Categorical(tuple(range(VALUES))) for i in range(LABELS)})


def _indices(arch: Arch) -> np.ndarray:
    return np.array([arch[f"l{i}"] for i in range(LABELS)])


def accuracy(arch: Arch) -> Dict[str, float]:
    """Toy evaluate(): the objective is a sum of per-label scores."""
    return {"accuracy": float(SCORES[np.arange(LABELS), _indices(arch)].sum()), "loss": 1.0}


def flops(arch: Arch) -> float:
    """Toy cost: a sum of per-label costs."""
    return float(COSTS[np.arange(LABELS), _indices(arch)].sum())


#: the same cost as a plain additive model (what the agent passes: the lookup table's ``cost_model``)
FLOPS = AdditiveCost(0.0, {f"l{i}": dict(enumerate(COSTS[i])) for i in range(LABELS)})


def _brute_force() -> tuple:
    grid = np.array(list(itertools.product(range(VALUES), repeat=LABELS)))
    scores = SCORES[np.arange(LABELS), grid].sum(axis=1)
    costs = COSTS[np.arange(LABELS), grid].sum(axis=1)
    target = float(np.median(costs))
    ok = costs <= target
    assert costs[scores.argmax()] > target  # the constraint binds
    best = int(np.flatnonzero(ok)[scores[ok].argmax()])
    return target, float(scores[best]), float(costs.min())


TARGET, BEST_SCORE, MIN_COST = _brute_force()
#: additive budget: strategies draw from the in-budget architectures directly (BudgetSampler)
BUDGET = Budget("flops", TARGET, additive=FLOPS)
#: opaque cost function: strategies fall back to uniform draws rejected when over budget
OPAQUE_BUDGET = Budget("flops", TARGET, flops)
BUDGETS = [pytest.param(BUDGET, id="additive"), pytest.param(OPAQUE_BUDGET, id="opaque")]


def _counting(evaluate: Any) -> tuple:
    calls: List[str] = []

    def wrapped(arch: Arch) -> Dict[str, float]:
        calls.append(arch_key(arch))
        return evaluate(arch)

    return wrapped, calls


STRATEGIES = [
    pytest.param(lambda: RandomSearch(RandomSearchParams(samples=60)), id="random"),
    pytest.param(lambda: EvolutionSearch(EvolutionParams(population=10, generations=6, parents=3)), id="evolution"),
]


@pytest.mark.parametrize("budget", BUDGETS)
def test_evolution_finds_constrained_optimum(budget: Budget) -> None:
    params = EvolutionParams(population=20, generations=25, parents=8, mutation_prob=0.2)
    found = 0
    for seed in range(5):
        result = EvolutionSearch(params).search(CHOICES, accuracy, budget, np.random.default_rng(seed))
        assert result.evaluations <= 500  # ~1.5 % of the 32,768 in-budget architectures
        found += abs(result.best_metrics["accuracy"] - BEST_SCORE) < 1e-9
    assert found >= 4


def test_evolution_beats_random_at_equal_evaluations() -> None:
    evo, rnd = [], []
    for seed in range(5):
        e = EvolutionSearch().search(CHOICES, accuracy, BUDGET, np.random.default_rng(seed))
        r = RandomSearch(RandomSearchParams(samples=e.evaluations)).search(
            CHOICES, accuracy, BUDGET, np.random.default_rng(seed)
        )
        assert r.evaluations == e.evaluations == 200
        evo.append(e.best_metrics["accuracy"])
        rnd.append(r.best_metrics["accuracy"])
    assert np.mean(evo) > np.mean(rnd) + 0.1


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("make", STRATEGIES)
def test_never_over_budget(make: Any, budget: Budget) -> None:
    for seed in range(4):
        result = make().search(CHOICES, accuracy, budget, np.random.default_rng(seed))
        assert budget.within(result.best_arch)
        # the two cost models sum in different orders: equal up to rounding, each consistent with itself
        assert result.best_metrics["flops"] == budget.cost_of(result.best_arch) <= TARGET
        assert result.best_metrics["flops"] == pytest.approx(flops(result.best_arch), rel=1e-12)
        assert result.best_metrics["accuracy"] == max(h["metrics"]["accuracy"] for h in result.history)
        for entry in result.history:
            assert entry["cost"] == budget.cost_of(entry["arch"]) <= TARGET
            assert set(entry) == {"arch", "metrics", "cost", "generation"}


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("make", STRATEGIES)
def test_seeded_determinism(make: Any, budget: Budget) -> None:
    a = make().search(CHOICES, accuracy, budget, np.random.default_rng(7))
    b = make().search(CHOICES, accuracy, budget, np.random.default_rng(7))
    c = make().search(CHOICES, accuracy, budget, np.random.default_rng(8))
    assert a.to_dict() == b.to_dict()
    assert [h["arch"] for h in a.history] != [h["arch"] for h in c.history]


@pytest.mark.parametrize("make", STRATEGIES)
def test_duplicates_not_reevaluated(make: Any) -> None:
    evaluate, calls = _counting(accuracy)
    result = make().search(CHOICES, evaluate, BUDGET, np.random.default_rng(0))
    assert len(calls) == len(set(calls)) == result.evaluations == len(result.history)
    # a 4-architecture space is exhausted early instead of looping or re-evaluating
    tiny = SearchSpaceChoices({"a": Categorical((0, 1)), "b": Categorical(("x", "y"))})
    evaluate, calls = _counting(lambda arch: {"accuracy": float(arch["a"])})
    result = make().search(tiny, evaluate, Budget.unconstrained(), np.random.default_rng(0))
    assert len(calls) == len(set(calls)) == result.evaluations == 4
    assert result.best_arch["a"] == 1 and "flops" not in result.best_metrics


def test_tracker_caches_by_arch_key() -> None:
    evaluate, calls = _counting(accuracy)
    tracker = SearchTracker(evaluate, BUDGET, "accuracy")
    arch = {"l0": 0, **{f"l{i}": 0 for i in range(1, LABELS)}}
    first = tracker.evaluate(arch)
    assert tracker.evaluate(dict(reversed(list(arch.items())))) is first
    assert len(calls) == len(tracker) == 1
    costly = {label: CHOICES[label].values[-1] for label in CHOICES}  # the unconstrained optimum is over budget
    with pytest.raises(ArchitectureError, match=r"^the search strategy asked to evaluate an architecture over budget"):
        tracker.evaluate(costly)
    assert len(calls) == 1


@pytest.mark.parametrize("additive", [True, False], ids=["additive", "opaque"])
@pytest.mark.parametrize("make", STRATEGIES)
def test_impossible_budget_names_metric(make: Any, additive: bool) -> None:
    budget = Budget("flops", MIN_COST - 0.5, additive=FLOPS) if additive else Budget("flops", MIN_COST - 0.5, flops)
    with pytest.raises(ArchitectureError) as info:
        make().search(CHOICES, accuracy, budget, np.random.default_rng(0))
    message = str(info.value)
    assert "flops" in message and f"{MIN_COST - 0.5:g}" in message and "cheapest" in message
    assert "\n" not in message
    if additive:  # the additive model knows the true cheapest architecture, not just the cheapest draw
        assert f"the cheapest costs {MIN_COST:.6g}" in message


def test_sample_in_budget_contract() -> None:
    strategy = RandomSearch(RandomSearchParams(max_sample_tries=50))
    tracker = strategy.tracker(accuracy, BUDGET)
    rng = np.random.default_rng(0)
    cheapest = {label: int(np.argmin(COSTS[i])) for i, label in enumerate(CHOICES)}
    dearest = {label: int(np.argmax(COSTS[i])) for i, label in enumerate(CHOICES)}
    only = {label: (v,) for label, v in cheapest.items()}
    assert strategy.sample_in_budget(CHOICES, BUDGET, rng, tracker, allowed=only) == cheapest
    tracker.evaluate(cheapest)
    assert strategy.sample_in_budget(CHOICES, BUDGET, rng, tracker, allowed=only) is None  # exhausted
    over = {label: (v,) for label, v in dearest.items()}
    assert strategy.sample_in_budget(CHOICES, BUDGET, rng, tracker, allowed=over) is None  # nothing fits
    # one free label: the sampled child keeps the fixed values and stays in budget
    free = {label: (v,) for label, v in cheapest.items() if label != "l3"}
    seen = set()
    while (arch := strategy.sample_in_budget(CHOICES, BUDGET, rng, tracker, allowed=free)) is not None:
        assert arch == {**cheapest, "l3": arch["l3"]}
        assert BUDGET.within(arch)
        seen.add(arch["l3"])
        tracker.evaluate(arch)
    fits = {v for v in range(VALUES) if flops({**cheapest, "l3": v}) <= TARGET}
    assert seen == fits - {cheapest["l3"]}


@pytest.mark.parametrize(
    "cls, params, field",
    [
        (EvolutionSearch, {"parents": 0}, "parents"),
        (EvolutionSearch, {"population": 4, "parents": 5}, "parents"),
        (EvolutionSearch, {"population": 0}, "population"),
        (EvolutionSearch, {"generations": 0}, "generations"),
        (EvolutionSearch, {"mutation_prob": 1.5}, "mutation_prob"),
        (EvolutionSearch, {"mutation_ratio": -0.1}, "mutation_ratio"),
        (EvolutionSearch, {"max_sample_tries": 0}, "max_sample_tries"),
        (RandomSearch, {"samples": 0}, "samples"),
        (RandomSearch, {"objective": ""}, "objective"),
    ],
)
def test_bad_params(cls: Any, params: Dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"search_strategy.{field}"):
        cls(cls.Params(**params))


def test_unknown_objective_is_config_error() -> None:
    strategy = RandomSearch(RandomSearchParams(samples=3, objective="acuracy"))
    with pytest.raises(ConfigError, match="did you mean accuracy"):
        strategy.search(CHOICES, accuracy, BUDGET, np.random.default_rng(0))


def test_budget() -> None:
    free = Budget.unconstrained()
    assert free.within({"anything": 1}) and free.cost_of({}) is None and not free.constrained
    for budget in (BUDGET, OPAQUE_BUDGET):
        assert budget.cost_of({f"l{i}": 0 for i in range(LABELS)}) == pytest.approx(COSTS[:, 0].sum())
    assert BUDGET.cost == FLOPS.cost and BUDGET.sampler(CHOICES) is BUDGET.sampler(CHOICES)
    assert BUDGET.sampler(CHOICES).target == TARGET and OPAQUE_BUDGET.sampler(CHOICES).target is None
    with pytest.raises(ConfigError, match="cost function"):
        Budget("flops", 1.0, None)
    with pytest.raises(ConfigError, match="metric name"):
        Budget(None, 1.0, additive=FLOPS)


def test_progress_called_once_per_evaluation() -> None:
    events: List[Dict[str, Any]] = []
    result = EvolutionSearch(EvolutionParams(population=5, generations=3, parents=2)).search(
        CHOICES, accuracy, BUDGET, np.random.default_rng(0), progress=events.append
    )
    assert len(events) == result.evaluations == 15
    assert [e["evaluations"] for e in events] == list(range(1, 16))
    assert [e["generation"] for e in events] == [h["generation"] for h in result.history] == [0] * 5 + [1] * 5 + [2] * 5
    assert events[-1]["best_objective"] == result.best_metrics["accuracy"]


def test_registry() -> None:
    assert {"random", "evolution"} <= set(SEARCH_STRATEGIES.names())
    assert SEARCH_STRATEGIES.get("evolution") is EvolutionSearch
    assert SEARCH_STRATEGIES.get("random") is RandomSearch
    with pytest.raises(UnknownComponentError, match="did you mean evolution"):
        SEARCH_STRATEGIES.get("evolutoin")
    params = from_dict(EvolutionSearch.Params, {"population": 8, "mutation_prob": 1}, "search_strategy")
    assert params == EvolutionParams(population=8, mutation_prob=1.0)


def test_package_imports_no_nnabla() -> None:
    code = (
        "import sys\n"
        "from core.registries import SEARCH_STRATEGIES\n"
        "SEARCH_STRATEGIES.names()\n"
        "import search_strategy.base, search_strategy.random_search, search_strategy.evolution\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nnabla'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_result_to_dict_is_json() -> None:
    def np_metrics(arch: Arch) -> Dict[str, Any]:
        return {"accuracy": np.float32(accuracy(arch)["accuracy"]), "params": np.int64(3)}

    budget = Budget("flops", TARGET, lambda arch: np.float64(flops(arch)))
    result = RandomSearch(RandomSearchParams(samples=5)).search(CHOICES, np_metrics, budget, np.random.default_rng(0))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["evaluations"] == 5 and len(data["history"]) == 5
    assert data["best_arch"] == result.best_arch and data["best_metrics"]["flops"] <= TARGET
