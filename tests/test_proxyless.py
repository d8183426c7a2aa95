"""ProxylessNAS: a weight step computes one candidate per layer and a binary-gate step two; the two-path estimate
is the chain rule through the pair's renormalised probabilities (finite differences); the rescale keeps the
other candidates' probabilities; REINFORCE scores are unbiased for every choice kind; the alphas move towards a
clearly better candidate (and towards cheaper ones under a cost penalty); a stopped run resumes exactly."""

import dataclasses
import itertools
import logging

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from core.config import OptimizerConfig, TrainConfig
from core.errors import ConfigError
from core.registries import BLOCKS, CRITERIA, DATASETS, SEARCH_SPACES, TRAINING_STRATEGIES
from core.run_logging import Monitor
from core.seed import make_rng, seed_nnabla
from criterion.hardware_constrained import expected_cost
from search_space.choices import Categorical, Subset
from search_space.enas import ENASMicroParams
from search_space.layers import ABCModule, BatchNorm2d, Conv2d, Identity, Linear, keep_statistics
from search_space.mutables import Decision, InputChoice, LayerChoice
from search_space.searchable import Searchable
from search_space.spec import DataInfo
from training_strategy.base import StrategyContext
from training_strategy.loop import RunIO, TrainLoop
from training_strategy.proxyless import ProxylessArchOptimizerConfig
from training_strategy.sampling import sample_decision

IO = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)
CE = CRITERIA.get("cross_entropy")(CRITERIA.get("cross_entropy").Params())
PROXYLESS = TRAINING_STRATEGIES.get("proxyless")
INFO = DataInfo(4, 1, 8)


def adam(lr):
    return ProxylessArchOptimizerConfig(lr=lr)


def synthetic(samples=256):
    ds = DATASETS.get("synthetic")
    return ds(ds.Params(num_classes=4, channels=1, input_size=8, samples=samples)).load()


class Toy(Searchable, ABCModule):
    """A shared 3x3 convolution, one choice over its output (``ops``), a linear classifier."""

    def __init__(self, ops):
        self.stem = Conv2d(1, 4, 3)
        self.op = LayerChoice(ops, label="op")
        self.fc = Linear(4 * 64, 4)

    def call(self, x):
        return self.fc(self.op(F.relu(self.stem(x))))


class InputToy(Searchable, ABCModule):
    """The same, but an input choice between the convolution's output and zeros of its shape."""

    def __init__(self):
        self.stem = Conv2d(1, 4, 3)
        self.pick = InputChoice(2, 1, label="pick")
        self.fc = Linear(4 * 64, 4)

    def call(self, x):
        h = F.relu(self.stem(x))
        return self.fc(self.pick([h, h * 0.0]))


def strategy(net, data, criterion=CE, cost_model=None, target=None, **params):
    policy = PROXYLESS(PROXYLESS.Params(**params))
    weights, arch = policy.split_train(data.train, make_rng(0))
    context = StrategyContext(
        criterion, make_rng(1), IO.logger, IO.monitor, 16, train_data=weights, arch_data=arch,
        cost_model=cost_model, target=target,
    )  # fmt: skip
    policy.setup(net, context)
    return policy, weights, arch


def convolutions(y):
    """The network's convolutions (a depthwise 1x1 is the gates' weighting of a candidate, not a layer)."""
    found = []

    def layer(f):
        kind = f.info.type_name
        return kind == "Convolution" or (kind == "DepthwiseConvolution" and f.inputs[1].shape[1:] != (1, 1))

    y.visit(lambda f: found.append(f) if layer(f) else None)
    return len(found)


def test_a_weight_step_computes_one_candidate_per_layer_and_a_binary_step_two(proxyless, tiny_params):
    data = synthetic()
    net = proxyless.build_supernet(tiny_params, INFO)
    policy = PROXYLESS(PROXYLESS.Params())
    weights, arch = policy.split_train(data.train, make_rng(0))
    cfg = TrainConfig(epochs=1, batch_size=16)
    loop = TrainLoop(net, CE, weights, cfg, policy, make_rng(0), IO, "p", strategy_context={"arch_data": arch})
    # every MB candidate holds three convolutions (1x1 expand, kxk depthwise, 1x1 project), skip none; the fixed
    # stages four (stem 3x3, its MB1 block's depthwise and project, the head's 1x1)
    mb = lambda values: sum(3 for v in values if v != "skip")  # noqa: E731
    for _ in range(3):
        loop.train_step()
        path = [d.value for d in net.decisions().values()]
        assert convolutions(loop._graph[3]) == 4 + mb(path)
        pairs = [[d.choice.values[i] for i in policy.pairs[k]] for k, d in net.decisions().items()]
        assert all(len(set(p)) == 2 for p in pairs)
        assert convolutions(policy._arch_graph[1][2]) == 4 + sum(mb(p) for p in pairs)
    assert all(d.mode == "sample" for d in net.decisions().values())


def test_the_two_path_estimate_is_the_chain_rule_through_the_pairs_probabilities():
    seed_nnabla(make_rng(0))
    net = Toy({"c3": Conv2d(4, 4, 3), "c1": Conv2d(4, 4, 1), "id": Identity()})
    alpha = net.arch_parameters()["op"]
    alpha.d = np.array([0.3, -0.2, 0.1], np.float32)
    data = synthetic()
    policy, _, arch = strategy(net, data)
    batch = arch.images[:16], arch.labels[:16]
    policy.solver.zero_grad()
    policy.binary_gradient(net, batch)
    estimate = alpha.g.copy()
    a, b = policy.pairs["op"]
    # by hand: the loss of y = g_a o_a + g_b o_b, the gates moved by the change of the pair's probabilities
    x, t = nn.Variable.from_numpy_array(batch[0]), nn.Variable.from_numpy_array(batch[1])
    h = F.relu(net.stem(x))
    outs = [c(h) for c in net.op.candidates]
    ga, gb = nn.Variable(()), nn.Variable(())
    loss = CE(net.fc(outs[a] * F.reshape(ga, (1, 1, 1, 1)) + outs[b] * F.reshape(gb, (1, 1, 1, 1))), t)
    pair = lambda v: np.exp(v[[a, b]]) / np.exp(v[[a, b]]).sum()  # noqa: E731
    a0 = alpha.d.astype(np.float64)
    p0 = pair(a0)

    def loss_at(v):
        p = pair(v)
        ga.d, gb.d = 1.0 + p[0] - p0[0], p[1] - p0[1]
        loss.forward()
        return float(loss.d)

    eps = 1e-2
    fd = np.array([(loss_at(a0 + eps * e) - loss_at(a0 - eps * e)) / (2 * eps) for e in np.eye(3)])
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(estimate, fd, rtol=2e-2, atol=2e-5)
    assert estimate[3 - a - b] == 0.0  # the candidate not drawn gets no gradient


def test_the_update_keeps_every_other_candidates_probability():
    seed_nnabla(make_rng(0))
    zero = lambda: BLOCKS.get("zero")(4, 4)  # noqa: E731
    net = Toy({"id": Identity(), "c1": Conv2d(4, 4, 1), "c3": Conv2d(4, 4, 3), "z": zero()})
    policy, _, _ = strategy(net, synthetic(), arch_optimizer=adam(0.1))
    decision = net.decisions()["op"]
    for _ in range(4):
        before = decision.probabilities()
        policy.arch_step(net)
        after = decision.probabilities()
        pair = list(policy.pairs["op"])
        others = [i for i in range(4) if i not in pair]
        np.testing.assert_allclose(after[others], before[others], rtol=1e-5)
        assert after[pair].sum() == pytest.approx(before[pair].sum(), rel=1e-5)
        assert np.abs(after[pair] - before[pair]).max() > 1e-3


def exact_probability(choice, alpha, value):
    """P(value) of the draw ``sample_decision`` makes, by enumeration (ordered draws summed for k of n)."""
    a = np.asarray(alpha, np.float64)
    if not isinstance(choice, Subset):
        return np.exp(a[choice.index(value)]) / np.exp(a).sum()
    if choice.k is None:
        q = 1 / (1 + np.exp(-a))
        return float(np.prod([q[i] if i in value else 1 - q[i] for i in range(a.size)]))
    total = 0.0
    for order in itertools.permutations(value):
        left, p = list(range(a.size)), 1.0
        for i in order:
            p *= np.exp(a[i]) / np.exp(a[left]).sum()
            left.remove(i)
        total += p
    return total


@pytest.mark.parametrize("choice", [Categorical(tuple("abcd")), Subset(4, 2), Subset(3, None)], ids=str)
def test_reinforce_scores_are_unbiased_for_every_choice_kind(choice):
    n = 4 if not isinstance(choice, Subset) else choice.n
    decision = Decision("d", choice, n)
    alpha0 = np.array([0.5, -0.3, 0.2, 0.0][:n])
    decision.ensure_alpha().d = alpha0
    alpha0 = decision.alpha.d.astype(np.float64)
    reward = np.random.default_rng(5).normal(size=len(choice.values))  # any function of the value
    rng = np.random.default_rng(0)
    draws = [sample_decision(decision, rng) for _ in range(20000)]
    mc = np.array([reward[i] * score for i, score in draws])
    expect = lambda a: sum(exact_probability(choice, a, v) * r for v, r in zip(choice.values, reward))  # noqa: E731
    exact = np.array([(expect(alpha0 + 1e-5 * e) - expect(alpha0 - 1e-5 * e)) / 2e-5 for e in np.eye(n)])
    stderr = mc.std(axis=0) / np.sqrt(len(mc))
    assert np.all(np.abs(mc.mean(axis=0) - exact) < 4 * stderr + 1e-9), (mc.mean(axis=0), exact, stderr)
    freq = np.bincount([i for i, _ in draws], minlength=len(choice.values)) / len(draws)
    probs = [exact_probability(choice, alpha0, v) for v in choice.values]
    np.testing.assert_allclose(freq, probs, atol=0.015)


def test_reinforce_losses_in_threads_equal_one_after_another_and_leave_running_statistics(proxyless, tiny_params):
    data = synthetic()
    results = []
    for threads in (1, 2):
        seed_nnabla(make_rng(3))
        net = proxyless.build_supernet(tiny_params, INFO)
        policy, _, _ = strategy(net, data, estimator="reinforce", arch_samples=6, reward_threads=threads)
        running = {k: v.d.copy() for k, v in net.get_parameters(grad_only=False).items() if k.endswith(("mean", "var"))}
        for _ in range(2):
            policy.arch_step(net)
        after = {k: v.d for k, v in net.get_parameters(grad_only=False).items() if k in running}
        assert all(np.array_equal(after[k], running[k]) for k in running)  # no path's statistics were averaged in
        results.append(({k: v.d.copy() for k, v in net.arch_parameters().items()}, policy.baseline))
    (alphas_1, baseline_1), (alphas_2, baseline_2) = results
    assert baseline_1 == baseline_2
    assert all(np.array_equal(alphas_1[k], alphas_2[k]) for k in alphas_1)
    assert any(np.abs(a).max() > 0 for a in alphas_1.values())  # the steps moved them


def test_kept_statistics_normalise_like_training_without_updating_the_running_ones():
    bn = BatchNorm2d(3)
    x = nn.Variable.from_numpy_array(np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 4, 4)).astype(np.float32))
    bn.training = True
    with keep_statistics(bn):
        kept = bn(x)
    kept.forward()
    assert np.array_equal(bn.get_parameters(grad_only=False)["mean"].d, np.zeros((1, 3, 1, 1), np.float32))
    normal = bn(x)
    normal.forward()
    np.testing.assert_array_equal(kept.d, normal.d)
    assert np.abs(bn.get_parameters(grad_only=False)["mean"].d).min() > 0.1  # outside the block: updated


@pytest.mark.parametrize("estimator", ["binary", "reinforce"])
def test_the_alphas_move_towards_the_clearly_better_candidate(estimator):
    seed_nnabla(make_rng(0))
    zero = lambda: BLOCKS.get("zero")(4, 4)  # noqa: E731
    net = Toy({"zero": zero(), "keep": Identity(), "zero2": zero()})
    data = synthetic(320)
    params = {"estimator": estimator, "arch_samples": 4, "arch_optimizer": adam(0.05)}
    policy = PROXYLESS(PROXYLESS.Params(**params))
    weights, arch = policy.split_train(data.train, make_rng(0))
    cfg = TrainConfig(epochs=8, batch_size=16, optimizer=OptimizerConfig(lr=0.05))
    TrainLoop(net, CE, weights, cfg, policy, make_rng(0), IO, "p", strategy_context={"arch_data": arch}).run()
    p = net.decisions()["op"].probabilities()
    assert p[1] > 0.6 and p[1] > 2 * max(p[0], p[2]), p


def test_reinforce_learns_input_choices_and_binary_gates_refuse_them():
    seed_nnabla(make_rng(0))
    net = InputToy()
    data = synthetic(320)
    policy = PROXYLESS(PROXYLESS.Params(estimator="reinforce", arch_samples=4, arch_optimizer=adam(0.05)))
    weights, arch = policy.split_train(data.train, make_rng(0))
    cfg = TrainConfig(epochs=6, batch_size=16, optimizer=OptimizerConfig(lr=0.05))
    TrainLoop(net, CE, weights, cfg, policy, make_rng(0), IO, "p", strategy_context={"arch_data": arch}).run()
    p = net.decisions()["pick"].probabilities()
    assert p[0] > 0.7, p  # the informative input
    micro = SEARCH_SPACES.get("ENASMicro").build_supernet(ENASMicroParams(num_layers=3, num_nodes=2), INFO)
    with pytest.raises(ConfigError, match=r"binary gates learn layer choices only, and '.*_in0' is an input choice"):
        strategy(micro, data)


def test_a_cost_penalty_moves_the_alphas_towards_cheaper_candidates(proxyless, tiny_params):
    net = proxyless.build_supernet(tiny_params, INFO)
    lut = proxyless.build_lookup_table(tiny_params, INFO)
    model = lut.cost_model("flops")
    hinge = CRITERIA.get("hardware_constrained")
    criterion = hinge(hinge.Params(form="hinge", hinge_weight=20.0))
    cost = expected_cost(net, model)
    cost.forward()
    start = float(cost.d)
    policy, _, _ = strategy(net, synthetic(), criterion, model, 0.5 * start, arch_optimizer=adam(0.05))
    for _ in range(8):
        policy.arch_step(net)
    cost.forward()
    assert float(cost.d) < 0.9 * start  # the penalty's gradient reaches every alpha, not only the pairs'


@pytest.mark.parametrize("estimator", ["binary", "reinforce"])
def test_stopped_after_one_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, proxyless, tiny_params, estimator):
    data = synthetic(224)
    cfg = TrainConfig(epochs=2, batch_size=16, max_steps_per_epoch=3, optimizer=OptimizerConfig(lr=0.05))
    params = PROXYLESS.Params(estimator=estimator, arch_samples=2, arch_optimizer=adam(0.05))

    def fresh(seed=0):
        seed_nnabla(make_rng(7))
        net = proxyless.build_supernet(tiny_params, INFO)
        policy = PROXYLESS(params)
        weights, arch = policy.split_train(data.train, make_rng(3))
        extras = {"arch_data": arch}
        return net, TrainLoop(net, CE, weights, cfg, policy, make_rng(seed), IO, "p", strategy_context=extras)

    net_a, straight = fresh()
    straight.run()
    _, first = fresh()
    first.cfg = dataclasses.replace(cfg, epochs=1)  # stopped after epoch 1
    first.run()
    first.save_checkpoint(str(tmp_path))
    net_c, resumed = fresh(seed=99)
    resumed.load_checkpoint(str(tmp_path))
    resumed.run()
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    final = net_a.get_parameters(grad_only=False)
    for k, v in net_c.get_parameters(grad_only=False).items():
        np.testing.assert_allclose(v.d, final[k].d, atol=1e-6, err_msg=k)
    alphas = net_a.arch_parameters()
    assert max(np.abs(a.d).max() for a in alphas.values()) > 1e-3  # they were trained
    for k, v in net_c.arch_parameters().items():
        np.testing.assert_allclose(v.d, alphas[k].d, atol=1e-6, err_msg=k)
    if estimator == "reinforce":
        assert resumed.policy.baseline == pytest.approx(straight.policy.baseline)
