"""Budget-aware sampling: exact uniformity, budget safety, tight budgets in big spaces, lookup-table parity."""

import itertools
import json
import math
from dataclasses import replace
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
from scipy.stats import chisquare

from core.errors import ArchitectureError, ConfigError
from search_space.choices import Arch, Categorical, SearchSpaceChoices, arch_key
from search_space.cost_model import AdditiveCost
from search_strategy.base import Budget
from search_strategy.evolution import EvolutionParams, EvolutionSearch
from search_strategy.random_search import RandomSearch, RandomSearchParams
from search_strategy.sampler import BudgetSampler


def _space(labels: int, values: int, seed: int, integer: bool = False) -> Tuple[SearchSpaceChoices, AdditiveCost]:
    g = np.random.default_rng(seed)
    costs = g.integers(100, 1000, (labels, values)) if integer else g.uniform(0.0, 1.0, (labels, values))
    choices = SearchSpaceChoices({f"l{i}": Categorical(tuple(range(values))) for i in range(labels)})
    table = {f"l{i}": {v: float(costs[i, v]) for v in range(values)} for i in range(labels)}
    return choices, AdditiveCost(1000.0 if integer else 0.5, table)


def _feasible(choices: SearchSpaceChoices, cost: AdditiveCost, target: float, allowed: Any = None) -> List[str]:
    """Brute force: keys of every in-budget architecture within ``allowed``."""
    allowed = allowed or {}
    values = [allowed.get(label, cat.values) for label, cat in choices.items()]
    archs = (dict(zip(choices, combo)) for combo in itertools.product(*values))
    return sorted(arch_key(a) for a in archs if cost.cost(a) <= target)


def _quantile_target(choices: SearchSpaceChoices, cost: AdditiveCost, q: float) -> float:
    costs = sorted(cost.cost(dict(zip(choices, c))) for c in itertools.product(*(c.values for c in choices.values())))
    return costs[int(q * (len(costs) - 1))]


def _uniformity_pvalue(draws: List[Arch], feasible: List[str]) -> float:
    keys = [arch_key(a) for a in draws]
    assert set(keys) <= set(feasible), "drew an architecture outside the feasible set"
    counts = np.array([keys.count(k) for k in feasible])
    return float(chisquare(counts).pvalue)


SMALL = _space(6, 4, seed=3)
SMALL_TARGET = _quantile_target(*SMALL, 0.015)


@pytest.mark.parametrize("bins", [4096, 2], ids=["fine-grid", "coarse-grid"])
@pytest.mark.parametrize("allowed", [None, {"l2": (1,), "l5": (2, 3, 1)}], ids=["whole-space", "allowed-subset"])
def test_exactly_uniform_over_feasible_set(bins: int, allowed: Any) -> None:
    choices, cost = SMALL
    feasible = _feasible(choices, cost, SMALL_TARGET, allowed)
    assert 10 <= len(feasible) <= 70  # a tight budget: under 2 % of the 4096 architectures
    sampler = BudgetSampler(choices, cost, SMALL_TARGET, bins=bins)
    rng = np.random.default_rng(0)
    draws = [sampler.sample(rng, allowed) for _ in range(150 * len(feasible))]
    assert _uniformity_pvalue(draws, feasible) > 1e-3
    assert {arch_key(a) for a in draws} == set(feasible)  # every feasible architecture is reachable


def test_uniformity_check_detects_a_biased_sampler() -> None:
    """Negative control: label-by-label uniform choice among values that still fit is *not* uniform."""
    choices, cost = SMALL
    feasible = _feasible(choices, cost, SMALL_TARGET)
    rng = np.random.default_rng(0)
    mins = {label: min(row.values()) for label, row in cost.table.items()}

    def greedy() -> Arch:
        arch: Arch = {}
        for label in choices:
            rest = sum(mins[other] for other in choices if other not in arch and other != label)
            spent = cost.base + sum(cost.table[k][v] for k, v in arch.items())
            ok = [v for v in choices[label].values if spent + cost.table[label][v] + rest <= SMALL_TARGET]
            arch[label] = ok[int(rng.integers(len(ok)))]
        return arch

    assert _uniformity_pvalue([greedy() for _ in range(150 * len(feasible))], feasible) < 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_never_over_budget_and_counts_bound_the_feasible_set(seed: int) -> None:
    choices, cost = _space(6, 3, seed)
    rng = np.random.default_rng(seed)
    for q in (0.001, 0.02, 0.3, 0.9):
        target = _quantile_target(choices, cost, q)
        feasible = _feasible(choices, cost, target)
        sampler = BudgetSampler(choices, cost, target)
        draws = [sampler.sample(rng) for _ in range(300)]
        assert all(cost.cost(a) <= target for a in draws)
        assert {arch_key(a) for a in draws} <= set(feasible)
        assert sampler.count() >= len(feasible) - 1e-6
        listed = sampler.feasible(limit=1000)
        assert listed is not None and sorted(arch_key(a) for a in listed) == feasible
        assert sampler.min_cost() == pytest.approx(cost.min_cost())


def test_none_when_nothing_fits() -> None:
    choices, cost = SMALL
    cheapest = cost.min_cost()
    rng = np.random.default_rng(0)
    sampler = BudgetSampler(choices, cost, cheapest - 1e-6)
    assert sampler.sample(rng) is None and sampler.count() == 0.0 and sampler.feasible() == []
    sampler = BudgetSampler(choices, cost, SMALL_TARGET)
    dearest = {label: max(row, key=row.get) for label, row in cost.table.items()}
    forced = {label: (value,) for label, value in list(dearest.items())[:3]}
    assert sampler.min_cost(forced) > SMALL_TARGET
    assert sampler.sample(rng, forced) is None and sampler.count(forced) == 0.0
    assert sampler.sample(rng, {"l0": ()}) is None
    assert sampler.min_cost({"l0": []}) == math.inf
    with pytest.raises(ArchitectureError, match="unknown label 'lx'"):
        sampler.sample(rng, {"lx": (0,)})
    with pytest.raises(ArchitectureError, match="label 'l1': invalid allowed value 9"):
        sampler.sample(rng, {"l1": (0, 9)})


def test_slack_zero_keeps_exactly_the_tied_cheapest() -> None:
    costs = [[2.0, 2.0, 5.0], [1.0, 3.0, 4.0], [0.25, 0.75, 0.25], [7.0, 7.0, 7.0]]
    choices = SearchSpaceChoices({f"l{i}": Categorical((0, 1, 2)) for i in range(4)})
    cost = AdditiveCost(1.0, {f"l{i}": dict(enumerate(row)) for i, row in enumerate(costs)})
    target = cost.min_cost()
    feasible = _feasible(choices, cost, target)
    assert len(feasible) == 2 * 1 * 2 * 3
    sampler = BudgetSampler(choices, cost, target)
    rng = np.random.default_rng(5)
    draws = [sampler.sample(rng) for _ in range(100 * len(feasible))]
    assert _uniformity_pvalue(draws, feasible) > 1e-3
    assert {arch_key(a) for a in draws} == set(feasible)
    assert sampler.sample(rng, {"l1": (1, 2)}) is None  # the only cheapest value of l1 excluded


def test_unconstrained_is_plain_uniform() -> None:
    choices, cost = SMALL
    for sampler in (
        BudgetSampler(choices, None, None),
        BudgetSampler(choices, cost, None),
        BudgetSampler(choices, cost, math.inf),
    ):
        rng, reference = np.random.default_rng(9), np.random.default_rng(9)
        assert [sampler.sample(rng) for _ in range(5)] == [choices.sample(reference) for _ in range(5)]
        assert sampler.count() == pytest.approx(choices.size())
    # a target every architecture meets: no programme, every value reachable
    loose = BudgetSampler(choices, cost, cost.max_cost())
    rng = np.random.default_rng(0)
    seen = {(label, a[label]) for a in (loose.sample(rng) for _ in range(200)) for label in a}
    assert len(seen) == sum(len(c) for c in choices.values())
    assert loose.count() == pytest.approx(choices.size())


def test_additive_cost_model() -> None:
    cost = AdditiveCost(2, {"a": {"x": 1, "y": 4}, "b": {0: 0.5, 1: 0.25, None: 3}})
    assert cost.cost({"a": "y", "b": None}) == cost({"b": None, "a": "y"}) == 9.0
    assert cost.min_cost() == 3.25 and cost.max_cost() == 9.0
    again = AdditiveCost.from_dict(json.loads(json.dumps(cost.to_dict())))
    assert again == cost and hash(again) == hash(cost)
    with pytest.raises(ArchitectureError, match="no value for label 'b'"):
        cost.cost({"a": "x"})
    with pytest.raises(ArchitectureError, match="label 'a' has no cost for value 'z'"):
        cost.cost({"a": "z", "b": 0})
    with pytest.raises(ConfigError, match="non-finite"):
        AdditiveCost(0.0, {"a": {"x": float("nan")}})
    choices = SearchSpaceChoices({"a": Categorical(("x", "y", "z")), "b": Categorical((0, 1, None))})
    with pytest.raises(ArchitectureError, match="label 'a' has no cost for value 'z'"):
        BudgetSampler(choices, cost, 5.0)
    with pytest.raises(ArchitectureError, match="'c' is not in the search space"):
        BudgetSampler(choices, AdditiveCost(0.0, {"c": {1: 1.0}}), 5.0)
    budget = Budget("flops", 5.0, additive=cost)
    assert budget.cost_of({"a": "x", "b": 1}) == 3.25 and budget.within({"a": "x", "b": 1})
    assert not budget.within({"a": "y", "b": 1})


# ---- a big space with a tight budget: 7^21 ~ 5.6e17 architectures, target 1.05 x the cheapest ----

BIG_LABELS, BIG_VALUES = 21, 7
BIG_CHOICES, BIG_COST = _space(BIG_LABELS, BIG_VALUES, seed=0, integer=True)
BIG_TARGET = math.floor(1.05 * BIG_COST.min_cost())
_scores = np.random.default_rng(100).uniform(0.0, 1.0, (BIG_LABELS, BIG_VALUES))
# dearer values score higher, so the best architectures press against the budget
BIG_SCORES = {
    label: {v: float(s) for v, s in zip(sorted(row, key=row.get), np.sort(_scores[i]))}
    for i, (label, row) in enumerate(BIG_COST.table.items())
}


def big_evaluate(arch: Arch) -> Dict[str, float]:
    """Toy objective: additive per-label scores."""
    return {"accuracy": sum(BIG_SCORES[label][v] for label, v in arch.items())}


def _knapsack() -> Tuple[int, float]:
    """Exact number of in-budget architectures and the constrained optimum, by DP over integer excess costs."""
    slack = int(BIG_TARGET - BIG_COST.min_cost())
    count, best = [1] * (slack + 1), [0.0] * (slack + 1)
    for label, row in BIG_COST.table.items():
        low = min(row.values())
        new_count, new_best = [0] * (slack + 1), [-math.inf] * (slack + 1)
        for value, c in row.items():
            e = int(c - low)
            for s in range(e, slack + 1):
                new_count[s] += count[s - e]
                new_best[s] = max(new_best[s], best[s - e] + BIG_SCORES[label][value])
        count, best = new_count, new_best
    return count[slack], best[slack]


BIG_FEASIBLE, BIG_OPTIMUM = _knapsack()


def _budget() -> Budget:
    return Budget("flops", BIG_TARGET, additive=BIG_COST)


def test_big_space_is_tight() -> None:
    assert BIG_CHOICES.size() > 1e17
    assert 1000 < BIG_FEASIBLE < 1e-12 * BIG_CHOICES.size()
    # uniform rejection (the old way, still used for non-additive budgets) finds nothing in 1000 tries
    with pytest.raises(ArchitectureError, match="1000 random samples"):
        RandomSearch(RandomSearchParams(samples=5)).search(
            BIG_CHOICES, big_evaluate, Budget("flops", BIG_TARGET, lambda a: BIG_COST.cost(a)), np.random.default_rng(0)
        )
    sampler = BudgetSampler(BIG_CHOICES, BIG_COST, BIG_TARGET)
    assert BIG_FEASIBLE <= sampler.count() <= 1.2 * BIG_FEASIBLE


def _check_history(result: Any, evaluations: int) -> None:
    keys = [arch_key(h["arch"]) for h in result.history]
    assert result.evaluations == len(keys) == len(set(keys)) == evaluations
    assert all(BIG_COST.cost(h["arch"]) == h["cost"] <= BIG_TARGET for h in result.history)
    assert result.best_metrics["accuracy"] <= BIG_OPTIMUM + 1e-9


def test_random_search_in_tight_big_space() -> None:
    budget = _budget()
    result = RandomSearch(RandomSearchParams(samples=100)).search(
        BIG_CHOICES, big_evaluate, budget, np.random.default_rng(0)
    )
    _check_history(result, 100)
    assert budget.sampler(BIG_CHOICES).draws <= 130  # ~1 draw per architecture, not ~1/fraction


def test_evolution_in_tight_big_space() -> None:
    params = EvolutionParams(population=20, generations=10, parents=5)
    evo, rnd = [], []
    for seed in range(3):
        budget = _budget()
        result = EvolutionSearch(params).search(BIG_CHOICES, big_evaluate, budget, np.random.default_rng(seed))
        _check_history(result, 200)
        assert sum(h["generation"] > 0 for h in result.history) == 180
        # children come from conditioned draws or small enumerated sets: far fewer than 1000 draws per arch
        assert budget.sampler(BIG_CHOICES).draws < result.evaluations
        evo.append(result.best_metrics["accuracy"])
        rnd.append(
            RandomSearch(RandomSearchParams(samples=200))
            .search(BIG_CHOICES, big_evaluate, _budget(), np.random.default_rng(seed))
            .best_metrics["accuracy"]
        )
    assert all(e > r + 0.1 for e, r in zip(evo, rnd))  # evolution beats random at equal evaluations
    assert max(evo) >= BIG_OPTIMUM - 0.05


def test_evolution_breeds_within_parent_values() -> None:
    strategy = EvolutionSearch(EvolutionParams(mutation_prob=0.3))
    rng = np.random.default_rng(0)
    a = {f"l{i}": i % 7 for i in range(BIG_LABELS)}
    b = {**a, "l0": 6, "l5": 0}
    allowed = strategy.crossover_space([a, b], BIG_CHOICES, rng)
    assert {label: set(v) for label, v in allowed.items()} == {label: {a[label], b[label]} for label in BIG_CHOICES}
    frees = []
    for _ in range(200):
        space = strategy.mutation_space([a], BIG_CHOICES, rng)
        if space is not None:
            assert all(tuple(v) == (a[label],) for label, v in space.items())
            frees.append(BIG_LABELS - len(space))
    assert 0.25 < np.mean(frees) / BIG_LABELS < 0.4


# ---- the lookup table's additive model ----


def test_lookup_table_additive_cost_matches_predict(proxyless: Any, tiny_params: Any, digits_info: Any) -> None:
    lut = proxyless.build_lookup_table(tiny_params, digits_info)
    macro, micro = proxyless.model_cfg(tiny_params, digits_info)
    # layers 0 and 1 share one decision: the shared label sums both layers
    shared = replace(
        macro, search=tuple(replace(layer, label="shared") if i < 2 else layer for i, layer in enumerate(macro.search))
    )
    shared_lut = proxyless.lookup_table(
        shared, micro, digits_info, superlayer_builder=proxyless.supernet.superlayer_builder
    )
    assert len(shared_lut.choices) == len(lut.choices) - 1
    rng = np.random.default_rng(0)
    for table in (lut, shared_lut):
        for metric in table.metrics:
            model = table.cost_model(metric)
            assert model.min_cost() < model.max_cost()
            for _ in range(30):
                arch = table.choices.sample(rng)
                assert model.cost(arch) == pytest.approx(table.predict(arch, metric), rel=1e-12)
    first, second = lut.choices.labels[:2]
    for metric in lut.metrics:
        rows = lut.cost_model(metric).table
        assert shared_lut.cost_model(metric).table["shared"] == {
            v: pytest.approx(rows[first][v] + rows[second][v]) for v in rows[first]
        }
    with pytest.raises(ConfigError, match="no metric 'latency'"):
        lut.cost_model("latency")


def test_real_lookup_table_tight_budget_random_and_evolution(proxyless: Any, digits_info: Any) -> None:
    """ProxylessNAS (9 searchable layers: 7^8 x 9 > 10^6 archs) at 1.05x its cheapest FLOPs, as the agent builds it."""
    params = proxyless.Params(
        first_channels=8, first_mb_channels=8, stages=((8, 3, 1), (16, 3, 2), (16, 3, 1)), last_channels=32
    )
    lut = proxyless.build_lookup_table(params, digits_info)
    choices = lut.choices
    cost = lut.cost_model("flops")
    target = 1.05 * cost.min_cost()
    budget = Budget("flops", target, additive=cost)
    assert choices.size() >= 1e6
    draws = np.random.default_rng(0)
    fraction = np.mean([cost.cost(choices.sample(draws)) <= target for _ in range(20000)])
    assert fraction < 1e-3  # rejection sampling from the whole space would almost never succeed

    def evaluate(arch: Arch) -> Dict[str, float]:
        return {"accuracy": float(sum(choices[label].index(v) for label, v in arch.items()))}

    feasible = BudgetSampler(choices, cost, target).feasible(limit=64)
    assert feasible is not None and 1 <= len(feasible)  # a handful of ~10^7: listed exactly
    expected = {arch_key(a) for a in feasible if cost.cost(a) <= target}
    for strategy in (
        RandomSearch(RandomSearchParams(samples=30)),
        EvolutionSearch(EvolutionParams(population=10, generations=3, parents=3)),
    ):
        result = strategy.search(choices, evaluate, budget, np.random.default_rng(1))
        assert {arch_key(e["arch"]) for e in result.history} == expected  # every in-budget arch, nothing else
        assert lut.predict(result.best_arch, "flops") <= target
