"""The differentiable family: DARTS steps move the alphas and lower the architecture-split loss, the
second-order gradient tends to the first-order one as the virtual step vanishes, hard Gumbel computes one
candidate per layer, and the differentiable search derives (and repairs into budget) the architecture."""

import logging

import nnabla as nn
import numpy as np
import pytest

from core.config import OptimizerConfig, TrainConfig
from core.registries import CRITERIA, DATASETS, TRAINING_STRATEGIES
from core.run_logging import Monitor
from core.seed import make_rng, seed_nnabla
from search_space.choices import Categorical, SearchSpaceChoices
from search_space.cost_model import AdditiveCost
from search_space.spec import DataInfo
from search_strategy.base import Budget
from search_strategy.differentiable import DifferentiableSearch, DifferentiableSearchParams
from training_strategy.differentiable import ArchOptimizerConfig, DifferentiableParams
from training_strategy.evaluation import evaluate_network
from training_strategy.loop import RunIO, TrainLoop

IO = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)
CE = CRITERIA.get("cross_entropy")(CRITERIA.get("cross_entropy").Params())


def setup_loop(proxyless, tiny_params, params, seed=0, lr=0.05):
    seed_nnabla(make_rng(seed))
    ds = DATASETS.get("synthetic")
    data = ds(ds.Params(num_classes=4, channels=1, input_size=8, samples=400)).load()
    supernet = proxyless.build_supernet(tiny_params, DataInfo(4, 1, 8))
    policy = TRAINING_STRATEGIES.get("differentiable")(params)
    weights, arch = policy.split_train(data.train, make_rng(seed))
    cfg = TrainConfig(epochs=3, batch_size=16, optimizer=OptimizerConfig(lr=lr))
    loop = TrainLoop(supernet, CE, weights, cfg, policy, make_rng(seed), IO, "d", strategy_context={"arch_data": arch})
    return loop, supernet, arch


def test_darts_moves_alphas_and_lowers_the_architecture_split_loss(proxyless, tiny_params):
    params = DifferentiableParams(arch_optimizer=ArchOptimizerConfig(lr=3e-2))
    loop, supernet, arch = setup_loop(proxyless, tiny_params, params)
    before_alpha = {k: v.d.copy() for k, v in supernet.arch_parameters().items()}
    before = evaluate_network(supernet, arch, 64, criterion=CE)["loss"]
    loop.run()
    after = evaluate_network(supernet, arch, 64, criterion=CE)["loss"]
    moved = [float(np.abs(v.d - before_alpha[k]).max()) for k, v in supernet.arch_parameters().items()]
    assert min(moved) > 1e-3  # every decision's alphas moved
    assert after < before - 0.1, (before, after)
    assert all(d.mode == "full" for d in supernet.decisions().values())


def alpha_grads(loop, supernet):
    policy = loop.policy
    saved = {k: v.d.copy() for k, v in supernet.weight_parameters().items()}
    state = policy.arch_iter.state_dict(), policy.train_iter.state_dict()
    x, t, loss = policy._graph(supernet)
    x.d, t.d = policy.arch_iter.next()
    policy.solver.zero_grad()
    if policy.params.order == 2:
        policy._second_order(supernet, x, t, loss)
    else:
        loss.forward()
        loss.backward()
    grads = {k: v.g.copy() for k, v in supernet.arch_parameters().items()}
    policy.arch_iter.load_state_dict(state[0])
    policy.train_iter.load_state_dict(state[1])
    for k, v in supernet.weight_parameters().items():
        np.testing.assert_array_equal(v.d, saved[k])  # the virtual step leaves no trace on the weights
    return grads


def test_second_order_gradient_tends_to_first_order_as_the_virtual_step_vanishes(proxyless, tiny_params):
    grads = {}
    for order, lr in ((1, 0.05), (2, 1e-7), (2, 0.5)):
        loop, supernet, _ = setup_loop(proxyless, tiny_params, DifferentiableParams(order=order, unrolled_lr=lr))
        grads[(order, lr)] = np.concatenate([g.ravel() for g in alpha_grads(loop, supernet).values()])
    first, tiny, big = grads[(1, 0.05)], grads[(2, 1e-7)], grads[(2, 0.5)]
    assert np.abs(first).max() > 0
    np.testing.assert_allclose(tiny, first, rtol=1e-3, atol=1e-6)
    assert np.abs(big - first).max() > 1e-4  # a real virtual step changes the gradient


def test_hard_gumbel_computes_one_candidate_per_layer(proxyless, tiny_params):
    params = DifferentiableParams(algorithm="gumbel", hard=True)
    loop, supernet, _ = setup_loop(proxyless, tiny_params, params)
    loop.policy.before_step(supernet, 0, 0, loop.rng)
    y = supernet(nn.Variable((2, 1, 8, 8)))
    # one-candidate graph: as many convolutions as the sampled path's standalone network
    sampled = loop.policy.graph_key(supernet)
    arch = {k: d.choice.values[i] for (k, d), i in zip(supernet.decisions().items(), sampled)}
    convs = []
    y.visit(lambda f: convs.append(f) if f.info.type_name == "Convolution" else None)
    model = proxyless.build_model(tiny_params, DataInfo(4, 1, 8), arch)
    ref = []
    model(nn.Variable((2, 1, 8, 8))).visit(lambda f: ref.append(f) if f.info.type_name == "Convolution" else None)
    assert len(convs) == len(ref)
    loop.train_step()  # and it trains


def test_differentiable_search_derives_and_repairs_into_budget():
    choices = SearchSpaceChoices({f"l{i}": Categorical(("a", "b", "c")) for i in range(4)})
    costs = {"a": 1.0, "b": 2.0, "c": 3.0}
    model = AdditiveCost(0.0, {label: costs for label in choices})
    probs = {
        "l0": [0.1, 0.2, 0.7],
        "l1": [0.05, 0.05, 0.9],
        "l2": [0.3, 0.3, 0.4],  # the least confident decision
        "l3": [0.02, 0.08, 0.9],
    }

    def evaluate(arch):
        return {"accuracy": 0.5}

    search = DifferentiableSearch(DifferentiableSearchParams())
    result = search.search(
        choices, evaluate, Budget.unconstrained(), np.random.default_rng(0), hints={"probabilities": probs}
    )
    assert result.best_arch == {"l0": "c", "l1": "c", "l2": "c", "l3": "c"} and result.evaluations == 1
    budget = Budget("flops", 10.0, additive=model)  # argmax costs 12: the least confident label gives way
    result = search.search(choices, evaluate, budget, np.random.default_rng(0), hints={"probabilities": probs})
    assert result.best_arch == {"l0": "c", "l1": "c", "l2": "a", "l3": "c"}
    with pytest.raises(Exception, match="differentiable needs the learned architecture probabilities"):
        search.search(choices, evaluate, budget, np.random.default_rng(0))


def test_derivation_skips_the_zero_op_and_full_mode_does_not_compute_it():
    from agent.search_agent import zero_candidates
    from search_space.blocks.builder import build_block
    from search_space.layers import ABCModule
    from search_space.mutables import LayerChoice
    from search_space.searchable import Searchable

    class Edge(Searchable, ABCModule):
        def __init__(self):
            ops = ["zero", "sep_conv_3x3", "max_pool_3x3"]
            self.edge = LayerChoice({op: build_block(op, 4, 4) for op in ops}, label="edge")

        def call(self, x):
            return self.edge(x)

    net = Edge()
    assert zero_candidates(net) == {"edge": ["zero"]}
    net.set_mode("full")
    y = net(nn.Variable((1, 4, 6, 6)))
    kinds = []
    y.visit(lambda f: kinds.append(f.info.type_name))
    assert kinds.count("MaxPooling") == 1 and "Slice" not in kinds and "MulScalar" not in kinds  # no Zero branch
    probs = {"edge": [0.6, 0.3, 0.1]}  # Zero is the most probable op: the next one is derived
    result = DifferentiableSearch(DifferentiableSearchParams()).search(
        net.choices(), lambda a: {"accuracy": 1.0}, Budget.unconstrained(), np.random.default_rng(0),
        hints={"probabilities": probs, "exclude": zero_candidates(net)},
    )  # fmt: skip
    assert result.best_arch == {"edge": "sep_conv_3x3"}
