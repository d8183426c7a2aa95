"""The choice protocol: Categorical and Subset (k-of-n, or any-of-n) through validation, JSON, mutation,
index encoding, and every search strategy on a space that mixes both."""

import json
from typing import Any, Dict

import numpy as np
import pytest

from core.errors import ArchitectureError
from search_space.choices import Categorical, SearchSpaceChoices, Subset, arch_key, decode_arch, encode_arch
from search_space.cost_model import AdditiveCost
from search_strategy.base import Budget
from search_strategy.evolution import EvolutionParams, EvolutionSearch
from search_strategy.random_search import RandomSearch, RandomSearchParams


def test_subset_enumerates_k_of_n_and_any_of_n():
    assert Subset(4, 2).values == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    assert Subset(1, None).values == ((), (0,))  # one input or none (seed 001's InputChoice(n_candidates=1))
    assert len(Subset(3, None)) == 8 and Subset(3, 0).values == ((),)
    with pytest.raises(ArchitectureError, match="Subset"):
        Subset(2, 3)


def test_mixed_space_validates_and_round_trips_through_json():
    space = SearchSpaceChoices({"op": Categorical(("conv3", "conv5")), "inputs": Subset(4, 2), "skip": Subset(1, None)})
    arch = {"op": "conv5", "inputs": [3, 1], "skip": []}  # as JSON gives it back: lists, any order
    canonical = space.validate(arch)
    assert canonical == {"op": "conv5", "inputs": (1, 3), "skip": ()}
    assert space.validate(decode_arch(encode_arch(canonical))) == canonical
    assert arch_key(canonical) == arch_key(space.validate(json.loads(json.dumps(canonical))))
    assert space.from_indices(space.to_indices(arch)) == canonical
    assert SearchSpaceChoices.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    for bad, message in (
        ({"op": "conv5", "inputs": [1, 1], "skip": []}, "label 'inputs': invalid value"),
        ({"op": "conv5", "inputs": [1], "skip": []}, "label 'inputs': invalid value"),
        ({"op": "conv5", "inputs": [0, 4], "skip": []}, "label 'inputs': invalid value"),
    ):
        with pytest.raises(ArchitectureError, match=message):
            space.validate(bad)
    assert space.size() == 2 * 6 * 2


def test_mutation_proposes_neighbours():
    rng = np.random.default_rng(0)
    sub = Subset(5, 2)
    for _ in range(200):
        new = sub.mutate((0, 3), rng)
        assert new in sub.values and len(set(new) & {0, 3}) == 1  # one input swapped for another
    grow = Subset(3, None)
    assert all(abs(len(grow.mutate((1,), rng)) - 1) == 1 for _ in range(50))
    cat = Categorical(("a", "b", "c"))
    seen = {cat.mutate("a", rng) for _ in range(100)}
    assert seen == {"b", "c"}


def toy_space():
    """6 layer decisions of 5 ops and 4 node-input decisions (2 of 4): 5^6 * 6^4 = 2.0e7 architectures."""
    items: Dict[str, Any] = {f"op{i}": Categorical(tuple(range(5))) for i in range(6)}
    items.update({f"node{i}": Subset(4, 2) for i in range(4)})
    return SearchSpaceChoices(items)


def score(arch):
    """Best: op = 4 everywhere and inputs (2, 3) everywhere."""
    ops = sum(v for k, v in arch.items() if k.startswith("op"))
    inputs = sum(sum(v) for k, v in arch.items() if k.startswith("node"))
    return {"accuracy": float(ops + inputs)}


def test_strategies_search_a_space_mixing_categorical_and_subset():
    space = toy_space()
    optimum = score({**{f"op{i}": 4 for i in range(6)}, **{f"node{i}": (2, 3) for i in range(4)}})["accuracy"]
    table = {
        label: {v: (v if isinstance(v, int) else float(sum(v))) for v in cat.values} for label, cat in space.items()
    }
    cost = AdditiveCost(0.0, table)  # cost = score: the budget cuts off the optimum
    target = optimum - 3
    budget = Budget("flops", target, additive=cost)
    for strategy in (
        RandomSearch(RandomSearchParams(samples=60)),
        EvolutionSearch(EvolutionParams(population=20, generations=15, parents=5, mutation_prob=0.2)),
    ):
        result = strategy.search(space, score, budget, np.random.default_rng(3))
        assert all(cost.cost(e["arch"]) <= target for e in result.history)
        assert all(space.validate(e["arch"]) == e["arch"] for e in result.history)
        if isinstance(strategy, EvolutionSearch):  # 300 evaluations of 2e7: it cannot enumerate, yet reaches the cap
            assert result.best_metrics["accuracy"] == target
