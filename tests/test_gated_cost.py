"""Gated costs (an operation costs only while its node takes its input: cell spaces) without nnabla: the model,
its bounds, exactly uniform budget sampling, JSON, and the derivation of a cell from learned probabilities."""

import itertools
import json
from typing import Dict, List, Tuple

import numpy as np
import pytest
from scipy.stats import chisquare

from search_space.choices import Categorical, SearchSpaceChoices, Subset, arch_key
from search_space.cost_model import AdditiveCost, GatedCost, GatedTerm, cost_model_from_dict
from search_strategy.base import Budget
from search_strategy.differentiable import DifferentiableSearch, derive_arch
from search_strategy.evolution import EvolutionParams, EvolutionSearch
from search_strategy.sampler import BudgetSampler

OPS = ("pool", "conv3", "conv5", "zero")


def cell(nodes: int = 2, seed: int = 0) -> Tuple[SearchSpaceChoices, GatedCost]:
    """A DARTS-like cell: node i has 2 + i edges (one op each) and keeps 2 of them; one ungated label ``width``."""
    g = np.random.default_rng(seed)
    items: List[Tuple[str, Categorical]] = [("width", Categorical((8, 16)))]
    terms = []
    for i in range(nodes):
        for j in range(2 + i):
            label = f"n{i}_e{j}"
            items.append((label, Categorical(OPS)))
            costs = dict(zip(OPS, [2.0, float(g.integers(5, 20)), float(g.integers(20, 60)), 0.0]))
            terms.append(GatedTerm(f"n{i}_in", j, label, costs))
        items.append((f"n{i}_in", Subset(2 + i, 2)))
    choices = SearchSpaceChoices(items)
    gates = {f"n{i}_in": choices[f"n{i}_in"].values for i in range(nodes)}
    return choices, GatedCost(AdditiveCost(100.0, {"width": {8: 0.0, 16: 30.0}}), tuple(terms), gates)


def every_arch(choices: SearchSpaceChoices) -> List[Dict]:
    return [dict(zip(choices, combo)) for combo in itertools.product(*(c.values for c in choices.values()))]


def test_cost_counts_only_chosen_edges() -> None:
    choices, model = cell()
    arch = {"width": 16, "n0_e0": "conv5", "n0_e1": "pool", "n0_in": (0, 1)}
    arch.update({"n1_e0": "conv3", "n1_e1": "conv5", "n1_e2": "pool", "n1_in": (0, 2)})
    by_label = {t.label: t.costs for t in model.terms}
    expected = 100 + 30 + by_label["n0_e0"]["conv5"] + 2 + by_label["n1_e0"]["conv3"] + 2
    assert model.cost(arch) == pytest.approx(expected)
    assert model.cost({**arch, "n1_e1": "pool"}) == model.cost(arch)  # an unchosen edge's op costs nothing


def test_bounds_hold_and_the_cheapest_is_exact() -> None:
    choices, model = cell()
    lower, upper = model.bounds()
    costs = []
    for arch in every_arch(choices):
        c = model.cost(arch)
        assert lower.cost(arch) <= c + 1e-9 and c <= upper.cost(arch) + 1e-9
        costs.append(c)
    assert model.min_cost() == pytest.approx(min(costs)) and model.max_cost() == pytest.approx(max(costs))


def test_json_round_trip() -> None:
    _, model = cell()
    back = cost_model_from_dict(json.loads(json.dumps(model.to_dict())))
    assert isinstance(back, GatedCost) and back.terms == model.terms and back.additive == model.additive
    assert back.gates == model.gates


def test_shared_labels_merge_into_one_term() -> None:
    gates = {"in": Subset(2, 1).values}
    terms = (GatedTerm("in", 0, "e0", {"a": 1.0, "b": 2.0}), GatedTerm("in", 0, "e0", {"a": 10.0, "b": 20.0}))
    model = GatedCost(AdditiveCost(0.0, {}), terms, gates)
    assert len(model.terms) == 1 and model.terms[0].costs == {"a": 11.0, "b": 22.0}


@pytest.mark.parametrize("q", [0.02, 0.3])
def test_budget_sampler_is_exactly_uniform_over_the_feasible_cells(q: float) -> None:
    choices, model = cell()
    archs = every_arch(choices)
    costs = sorted(model.cost(a) for a in archs)
    target = costs[int(q * (len(costs) - 1))]
    feasible = sorted(arch_key(a) for a in archs if model.cost(a) <= target)
    sampler = BudgetSampler(choices, model, target)
    rng = np.random.default_rng(0)
    draws = [arch_key(sampler.sample(rng)) for _ in range(40 * len(feasible))]
    assert set(draws) <= set(feasible)
    counts = np.array([draws.count(k) for k in feasible])
    assert chisquare(counts).pvalue > 1e-3
    assert sampler.count() >= len(feasible)  # the programme counts a superset


def test_evolution_stays_in_a_gated_budget() -> None:
    choices, model = cell(nodes=3, seed=1)
    target = model.min_cost() + 0.25 * (model.max_cost() - model.min_cost())
    budget = Budget("flops", target, additive=model)
    strategy = EvolutionSearch(EvolutionParams(population=8, generations=3, parents=3))

    def evaluate(arch):  # prefers conv5 everywhere it is taken: the budget must hold it back
        return {"accuracy": sum(arch[f"n{i}_e{j}"] == "conv5" for i in range(3) for j in range(2 + i))}

    result = strategy.search(choices, evaluate, budget, np.random.default_rng(0))
    assert all(model.cost(e["arch"]) <= target for e in result.history)
    assert result.best_metrics["flops"] <= target


def test_derivation_keeps_the_edges_with_the_strongest_non_zero_ops() -> None:
    choices, _ = cell()
    sizes = {label: c.n if isinstance(c, Subset) else len(c) for label, c in choices.items()}  # per input / value
    probs = {label: np.full(n, 1.0 / n).tolist() for label, n in sizes.items()}
    probs["n1_e0"] = [0.05, 0.05, 0.1, 0.8]  # Zero dominates: its best real op has 0.1
    probs["n1_e1"] = [0.1, 0.6, 0.2, 0.1]  # strongest real op
    probs["n1_e2"] = [0.3, 0.3, 0.3, 0.1]
    gates = {"n0_in": {0: ["n0_e0"], 1: ["n0_e1"]}, "n1_in": {0: ["n1_e0"], 1: ["n1_e1"], 2: ["n1_e2"]}}
    exclude = {label: ["zero"] for label in choices if "_e" in label}
    arch = derive_arch(choices, probs, exclude, gates)
    assert arch["n1_in"] == (1, 2) and arch["n1_e0"] == "conv5"  # never Zero, even where it dominates
    # without the gates the (uniform) input probabilities alone would keep inputs 0 and 1
    assert derive_arch(choices, probs, exclude)["n1_in"] == (0, 1)
    # the learned input weights count too (PC-DARTS): a strong weight on input 0 outranks its weak op
    probs["n1_in"] = [0.9, 0.05, 0.05]
    assert derive_arch(choices, probs, exclude, gates)["n1_in"] == (0, 1)
    result = DifferentiableSearch().search(
        choices, lambda a: {"accuracy": 1.0}, Budget.unconstrained(), np.random.default_rng(0),
        hints={"probabilities": probs, "exclude": exclude, "gates": gates},
    )  # fmt: skip
    assert result.best_arch == derive_arch(choices, probs, exclude, gates)
