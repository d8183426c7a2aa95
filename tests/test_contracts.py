"""Contract tests generated from the registries: every criterion, training strategy and search strategy."""

import logging

import nnabla as nn
import numpy as np
import pytest

from core.registries import CRITERIA, DATASETS, SEARCH_STRATEGIES, TRAINING_STRATEGIES
from core.run_logging import Monitor
from search_space.choices import Categorical, SearchSpaceChoices
from search_strategy.base import Budget
from training_strategy.base import StrategyContext


@pytest.mark.parametrize("name", CRITERIA.names())
def test_criterion_contract(name):
    cls = CRITERIA.get(name)
    criterion = cls(cls.Params())
    rng = np.random.default_rng(0)
    logits = nn.Variable.from_numpy_array(rng.standard_normal((8, 5)).astype(np.float32), need_grad=True)
    target = nn.Variable.from_numpy_array(rng.integers(0, 5, (8, 1)))
    loss = criterion(logits, target)
    loss.forward()
    assert loss.shape == () and np.isfinite(loss.d) and float(loss.d) > 0
    logits.grad.zero()
    loss.backward()
    assert np.abs(logits.g).sum() > 0
    # a confident correct prediction costs less than a confident wrong one
    good = np.full((8, 5), -5.0, np.float32)
    good[np.arange(8), target.d[:, 0]] = 5.0
    logits.d = good
    loss.forward()
    low = float(loss.d)
    logits.d = -good
    loss.forward()
    assert low < float(loss.d)


@pytest.mark.parametrize("name", TRAINING_STRATEGIES.names())
def test_training_strategy_contract(name, proxyless, tiny_params, digits_info):
    """Every training strategy sets up from a context, picks what each step computes, and (if it learns
    architecture parameters) moves them; path-sampling ones change the path between steps."""
    cls = TRAINING_STRATEGIES.get(name)
    policy = cls(cls.Params())
    supernet = proxyless.build_supernet(tiny_params, digits_info)
    rng = np.random.default_rng(0)
    ds = DATASETS.get("synthetic")
    data = ds(ds.Params(num_classes=10, channels=1, input_size=8, samples=200)).load()
    weights, arch = policy.split_train(data.train, rng)
    criterion = CRITERIA.get("cross_entropy")(CRITERIA.get("cross_entropy").Params())
    lut = proxyless.build_lookup_table(tiny_params, digits_info)
    context = StrategyContext(
        criterion, rng, logging.getLogger("test"), Monitor(None), 4, train_data=weights, arch_data=arch,
        cost_model=lut.cost_model("flops"),
    )  # fmt: skip
    policy.setup(supernet, context)
    groups = set(policy.weight_groups(supernet))
    groups |= {
        supernet.group_name(s.path, c) for s in supernet.mutables() for c in range(len(s.mutable.candidate_names))
    }
    alphas = {k: v.d.copy() for k, v in supernet.arch_parameters().items()}
    seen = set()
    for step in range(20 if not policy.learns_arch_parameters else 3):
        policy.before_step(supernet, 0, step, rng)
        assert set(policy.active_groups(supernet)) <= groups  # (parameter-free candidates have no group)
        seen.add(policy.graph_key(supernet))
        x = nn.Variable((2, 1, 8, 8))
        assert supernet(x).shape == (2, 10)
        policy.after_step(supernet, 0, step, rng)
    if policy.learns_arch_parameters:
        assert any(not np.array_equal(v.d, alphas[k]) for k, v in supernet.arch_parameters().items())
    else:
        assert len(seen) > 1  # the path changes between steps
    state = policy.state_dict()
    policy.load_state_dict(state)


@pytest.mark.parametrize("name", SEARCH_STRATEGIES.names())
def test_search_strategy_contract(name):
    """Every strategy, on a small space with a known optimum, returns an in-budget arch it evaluated."""
    choices = SearchSpaceChoices({f"l{i}": Categorical((0, 1, 2)) for i in range(4)})

    def evaluate(arch):
        return {"accuracy": sum(arch.values()) / 8.0}

    budget = Budget("flops", 5.0, lambda a: float(sum(a.values())))
    cls = SEARCH_STRATEGIES.get(name)
    # learned probabilities rising with the value: the most probable in-budget arch is an optimum
    hints = {
        "probabilities": {label: list(np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()) for label in choices}
    }
    result = cls(cls.Params()).search(choices, evaluate, budget, np.random.default_rng(0), hints=hints)
    assert budget.within(result.best_arch)
    assert result.best_metrics["accuracy"] == pytest.approx(5 / 8)  # 81 archs: every strategy finds the optimum
    assert any(h["arch"] == result.best_arch for h in result.history)
