"""Multi-objective evolution (objective vs cost): non-dominated sorting and crowding by hand, a search whose
returned front is non-dominated, within budget and holds the brute-forced extreme points, and a run writing
pareto.json."""

import itertools
import json
import math

import numpy as np
import pytest

from core.errors import ConfigError
from core.pareto import crowding_distance, non_dominated_sort
from search_space.choices import Categorical, SearchSpaceChoices
from search_space.cost_model import AdditiveCost
from search_strategy.base import Budget
from search_strategy.evolution import EvolutionParams, EvolutionSearch

# (objective, cost): maximise the first, minimise the second
POINTS = [(0.9, 10.0), (0.8, 5.0), (0.7, 7.0), (0.95, 20.0), (0.6, 1.0), (0.5, 6.0), (float("nan"), 1.0)]


def test_non_dominated_sort_by_hand():
    fronts = non_dominated_sort(POINTS)
    assert fronts[0] == [4, 1, 0, 3]  # cheapest first: (0.6, 1), (0.8, 5), (0.9, 10), (0.95, 20)
    assert fronts[1] == [5, 2]  # (0.5, 6) and (0.7, 7) are dominated only by the first front
    assert fronts[-1] == [6] and sorted(i for f in fronts for i in f) == list(range(len(POINTS)))


def test_crowding_distance_by_hand():
    front = [4, 1, 0, 3]
    d = crowding_distance(POINTS, front)
    assert d[0] == math.inf and d[3] == math.inf  # the extremes of both coordinates
    # point 1 (0.8, 5): objective neighbours 0.6 / 0.9 over the span 0.35, cost neighbours 1 / 10 over 19
    assert d[1] == pytest.approx((0.9 - 0.6) / 0.35 + (10 - 1) / 19)
    assert d[2] == pytest.approx((0.95 - 0.8) / 0.35 + (20 - 5) / 19)


def space():
    """6 labels x 3 values; accuracy grows with each label's value, and so does the cost (a real trade-off)."""
    choices = SearchSpaceChoices({f"l{i}": Categorical((0, 1, 2)) for i in range(6)})
    g = np.random.default_rng(7)
    gain = g.uniform(0.5, 1.5, (6, 3)) * np.array([0, 1, 2])
    cost = AdditiveCost(1.0, {f"l{i}": {v: float(g.uniform(1, 3) * v * v) for v in range(3)} for i in range(6)})

    def evaluate(arch):
        return {"accuracy": float(sum(gain[i, arch[f"l{i}"]] for i in range(6)))}

    return choices, cost, evaluate


def true_front(choices, cost, evaluate, target):
    archs = [dict(zip(choices, c)) for c in itertools.product(*(c.values for c in choices.values()))]
    archs = [a for a in archs if cost(a) <= target]
    pts = [(evaluate(a)["accuracy"], cost(a)) for a in archs]
    return archs, pts


def test_pareto_evolution_returns_a_non_dominated_front_with_the_extremes():
    choices, cost, evaluate = space()
    target = 0.6 * cost.max_cost()
    params = EvolutionParams(population=40, generations=12, parents=12, mutation_prob=0.3, selection="pareto")
    result = EvolutionSearch(params).search(choices, evaluate, Budget("flops", target, additive=cost),
                                            np.random.default_rng(0))  # fmt: skip
    front = result.front
    assert front and all(e["cost"] <= target for e in front)
    for a, b in itertools.permutations(front, 2):  # no point of the front dominates another
        better_or_equal = a["metrics"]["accuracy"] >= b["metrics"]["accuracy"] and a["cost"] <= b["cost"]
        strictly = a["metrics"]["accuracy"] > b["metrics"]["accuracy"] or a["cost"] < b["cost"]
        assert not (better_or_equal and strictly)
    assert [e["cost"] for e in front] == sorted(e["cost"] for e in front)
    archs, pts = true_front(choices, cost, evaluate, target)
    cheapest = min(range(len(pts)), key=lambda i: (pts[i][1], -pts[i][0]))
    best = max(range(len(pts)), key=lambda i: (pts[i][0], -pts[i][1]))
    assert front[0]["arch"] == archs[cheapest]  # the cheapest architecture (all zeros) is found
    assert front[-1]["metrics"]["accuracy"] == pytest.approx(pts[best][0])  # and the most accurate in budget
    assert result.best_arch == front[-1]["arch"]  # the best by the objective is the front's most accurate point
    again = EvolutionSearch(params).search(choices, evaluate, Budget("flops", target, additive=cost),
                                           np.random.default_rng(0))  # fmt: skip
    assert [e["arch"] for e in again.front] == [e["arch"] for e in front]  # deterministic for a fixed rng


def test_pareto_selection_spreads_parents_along_the_front():
    choices, cost, evaluate = space()
    single = EvolutionSearch(EvolutionParams(population=30, generations=6, parents=6, mutation_prob=0.3))
    multi = EvolutionSearch(EvolutionParams(population=30, generations=6, parents=6, mutation_prob=0.3,
                                            selection="pareto"))  # fmt: skip
    budget = Budget("flops", None, additive=cost)
    a = single.search(choices, evaluate, budget, np.random.default_rng(1))
    b = multi.search(choices, evaluate, budget, np.random.default_rng(1))
    assert a.front is None and len(b.front) > 0
    # the multi-objective search explores cheap architectures the accuracy-only one leaves behind
    assert min(e["cost"] for e in b.history[30:]) < min(e["cost"] for e in a.history[30:])


def test_pareto_needs_a_cost():
    choices, _, evaluate = space()
    with pytest.raises(ConfigError, match="pareto trades the objective against a cost"):
        EvolutionSearch(EvolutionParams(population=4, generations=2, parents=2, selection="pareto")).search(
            choices, evaluate, Budget.unconstrained(), np.random.default_rng(0)
        )


@pytest.mark.slow
def test_a_pareto_run_writes_its_front(tmp_path):
    import main  # the only test here that builds networks

    args = ["-c", "configs/demo.yml", "--title", "p", "--output-dir", str(tmp_path), "--quiet",
            "search_space={first_channels: 8, first_mb_channels: 8, stages: [[8, 2, 1], [16, 2, 2]], "
            "last_channels: 32}", "hardware.target_hc=null", "train.epochs=1", "train.max_steps_per_epoch=2",
            "search.valid_batches=1", "search.retrain=false",
            "search_strategy={population: 6, generations: 2, parents: 3, selection: pareto}"]  # fmt: skip
    assert main.main(args) == 0
    saved = json.loads((tmp_path / "p" / "pareto.json").read_text())
    history = json.loads((tmp_path / "p" / "search_history.json").read_text())["history"]
    assert saved["cost"] == "flops" and saved["front"]
    costs = [e["cost"] for e in saved["front"]]
    assert costs == sorted(costs) and min(costs) == min(e["cost"] for e in history)  # the cheapest is on it
