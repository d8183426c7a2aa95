"""Training: uniform sampling statistics, the loop (loss falls, accumulation, clipping), per-group solvers,
BN recalibration, checkpoints, schedules."""

import logging
import os

import nnabla as nn
import numpy as np
import pytest
from scipy import stats

from core.config import OptimizerConfig, TrainConfig
from core.errors import CheckpointError, TrainingDivergedError
from core.registries import CRITERIA, DATASETS, TRAINING_STRATEGIES
from core.run_logging import Monitor
from core.run_state import load_parameters
from core.seed import make_rng, seed_nnabla, spawn_rng
from dataset.base import ArrayDataset
from search_space.layers import BatchNorm2d, GlobalAvgPool, Linear, ModuleList
from training_strategy.base import FixedNetwork
from training_strategy.evaluation import evaluate_network, recalibrate_bn
from training_strategy.loop import RunIO, TrainLoop
from training_strategy.optim import make_scheduler

IO = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)


def sample_paths(supernet, seed, n):
    policy = TRAINING_STRATEGIES.get("uniform")(TRAINING_STRATEGIES.get("uniform").Params())
    rng = spawn_rng(make_rng(seed))
    archs = []
    for step in range(n):
        policy.before_step(supernet, 0, step, rng)
        archs.append(supernet.active_arch())
    return np.array([supernet.choices().to_indices(a) for a in archs])


def test_uniform_sampling_is_uniform_independent_and_reproducible(proxyless, tiny_params, digits_info):
    supernet = proxyless.build_supernet(tiny_params, digits_info)
    sizes = [len(c) for c in supernet.choices().values()]
    idx = sample_paths(supernet, seed=3, n=3000)
    for layer, k in enumerate(sizes):
        counts = np.bincount(idx[:, layer], minlength=k)
        assert stats.chisquare(counts).pvalue > 1e-3, (layer, counts)
    for a in range(len(sizes)):
        for b in range(a + 1, len(sizes)):
            table = np.zeros((sizes[a], sizes[b]))
            np.add.at(table, (idx[:, a], idx[:, b]), 1)
            assert stats.chi2_contingency(table).pvalue > 1e-3, (a, b)
    # layers do not move together (the shared-seed pitfall makes every layer draw the same index)
    same = np.mean([len(set(row)) == 1 for row in idx])
    assert same < 0.01
    np.testing.assert_array_equal(idx[:200], sample_paths(supernet, seed=3, n=200))
    assert not np.array_equal(idx[:200], sample_paths(supernet, seed=4, n=200))


def synthetic(samples=256):
    ds = DATASETS.get("synthetic")
    return ds(ds.Params(num_classes=4, channels=1, input_size=8, samples=samples)).load()


def make_loop(network, data, policy, cfg, seed=0, criterion="cross_entropy"):
    crit = CRITERIA.get(criterion)(CRITERIA.get(criterion).Params())
    return TrainLoop(network, crit, data.train, cfg, policy, make_rng(seed), IO, tag="t", valid_data=data.valid)


def test_supernet_loss_decreases_and_only_active_groups_move(proxyless, tiny_params):
    from search_space.spec import DataInfo

    data = synthetic(512)
    supernet = proxyless.build_supernet(tiny_params, DataInfo(4, 1, 8))
    policy = TRAINING_STRATEGIES.get("uniform")(TRAINING_STRATEGIES.get("uniform").Params())
    cfg = TrainConfig(epochs=10, batch_size=16, optimizer=OptimizerConfig(lr=0.05, weight_decay=1e-3))
    loop = make_loop(supernet, data, policy, cfg)
    before = {k: v.d.copy() for k, v in supernet.get_parameters(grad_only=True).items()}
    loop.train_step()
    active = set(policy.active_groups(supernet))
    for group, params in supernet.weight_groups().items():
        moved = any(not np.array_equal(before[k], v.d) for k, v in params.items())
        assert moved == (group in active), group  # inactive candidates: no decay, no stale momentum
    history = loop.run()
    print([round(h["loss"], 3) for h in history], [round(h["valid_accuracy"], 3) for h in history])
    assert np.mean([h["loss"] for h in history[-2:]]) < history[0]["loss"] - 0.3
    assert history[-1]["valid_accuracy"] > 0.6


def linear_net():
    return ModuleList([GlobalAvgPool(), Linear(1, 4)])


def test_gradient_accumulation_matches_full_batch():
    data = synthetic(128)
    results = []
    for mini in (32, 8):
        nn.random.seed(0)
        np.random.seed(0)
        net = linear_net()
        net.set_parameters(
            {
                k: nn.Variable.from_numpy_array(np.full(v.shape, 0.1, np.float32))
                for k, v in net.get_parameters().items()
            }
        )
        cfg = TrainConfig(
            epochs=1,
            batch_size=32,
            mini_batch=mini,
            grad_clip=None,
            lr_schedule="constant",
            optimizer=OptimizerConfig(name="sgd", lr=0.5, weight_decay=0.0),
        )
        loop = make_loop(net, data, FixedNetwork(), cfg, seed=5)
        loop.train_step()
        results.append({k: v.d.copy() for k, v in net.get_parameters().items()})
    for k in results[0]:
        np.testing.assert_allclose(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    data = synthetic(64)
    net = linear_net()
    start = {k: v.d.copy() for k, v in net.get_parameters().items()}
    cfg = TrainConfig(
        epochs=1,
        batch_size=32,
        grad_clip=1e-3,
        lr_schedule="constant",
        optimizer=OptimizerConfig(name="sgd", lr=1.0, weight_decay=0.0),
    )
    loop = make_loop(net, data, FixedNetwork(), cfg)
    m = loop.train_step()
    assert m["grad_norm"] > 1e-3
    step = np.sqrt(sum(((v.d - start[k]) ** 2).sum() for k, v in net.get_parameters().items()))
    assert step == pytest.approx(1e-3, rel=1e-3)


def test_checkpoint_round_trip_continues_exactly(tmp_path, proxyless, tiny_params):
    """Train 2 epochs straight vs 1 epoch + checkpoint + a fresh loop resuming: same weights, same losses."""
    from search_space.spec import DataInfo

    data = synthetic(96)
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer=OptimizerConfig(lr=0.05))
    uniform = TRAINING_STRATEGIES.get("uniform")

    def fresh(seed=0):
        seed_nnabla(make_rng(7))  # the same initial weights each time (the resumed net's are overwritten anyway)
        net = proxyless.build_supernet(tiny_params, DataInfo(4, 1, 8))
        return net, make_loop(net, data, uniform(uniform.Params()), cfg, seed=seed)

    net_a, straight = fresh()
    straight.run()
    net_b, first = fresh()
    first.cfg = TrainConfig(epochs=1, batch_size=16, optimizer=OptimizerConfig(lr=0.05))
    first.run()
    first.save_checkpoint(str(tmp_path))
    net_c, resumed = fresh(seed=123)  # another seed: everything must come from the checkpoint
    resumed.load_checkpoint(str(tmp_path))
    assert resumed.epoch == 1 and resumed.global_step == first.global_step
    resumed.run()
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    final_a = net_a.get_parameters(grad_only=False)
    for k, v in net_c.get_parameters(grad_only=False).items():
        np.testing.assert_allclose(v.d, final_a[k].d, atol=1e-6, err_msg=k)
    # a checkpoint of another space is one clear error
    with pytest.raises(CheckpointError, match="does not fit|has shape"):
        load_parameters(
            proxyless.build_supernet(proxyless.Params(), DataInfo(4, 1, 8)).get_parameters(grad_only=False),
            str(tmp_path / "t_params.1.h5"),
        )
    # a second save replaces the first set of files and removes the old ones
    resumed.save_checkpoint(str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    assert files == ["t_arrays.2.h5", "t_params.2.h5", "t_state.json"]


def test_policy_state_round_trips_through_the_checkpoint(tmp_path):
    """A strategy's own state (JSON values and arrays) is saved with the loop and restored into a fresh one."""
    from training_strategy.base import FixedNetwork as Base

    class Counting(Base):
        def __init__(self):
            super().__init__()
            self.steps, self.logits = 0, np.zeros(3, np.float32)

        def after_step(self, supernet, epoch, step, rng):
            self.steps += 1
            self.logits += rng.normal(size=3).astype(np.float32)

        def state_dict(self):
            return {"steps": self.steps, "logits": self.logits.copy()}

        def load_state_dict(self, state):
            self.steps, self.logits = state["steps"], np.asarray(state["logits"])

    data = synthetic(64)
    cfg = TrainConfig(epochs=1, batch_size=16)
    policy = Counting()
    loop = make_loop(linear_net(), data, policy, cfg)
    loop.run()
    loop.save_checkpoint(str(tmp_path))
    other = Counting()
    make_loop(linear_net(), data, other, cfg, seed=5).load_checkpoint(str(tmp_path))
    assert other.steps == policy.steps == loop.steps_per_epoch
    np.testing.assert_array_equal(other.logits, policy.logits)
    assert np.abs(other.logits).sum() > 0


def test_non_finite_loss_stops_or_skips_without_touching_the_weights():
    data = synthetic(128)
    net = linear_net()
    loop = make_loop(net, data, FixedNetwork(), TrainConfig(epochs=1, batch_size=16))
    before = {k: v.d.copy() for k, v in net.get_parameters().items()}
    real_next = loop.iterator.next

    def poisoned():
        x, y = real_next()
        x[0, 0, 0, 0] = np.nan
        return x, y

    loop.iterator.next = poisoned
    with pytest.raises(TrainingDivergedError, match=r"^\[t\] non-finite loss .* at epoch 1, step 1: stopped"):
        loop.train_step()
    assert all(np.array_equal(v.d, before[k]) for k, v in net.get_parameters().items())
    skip = make_loop(net, data, FixedNetwork(), TrainConfig(epochs=1, batch_size=16, on_nan="skip"))
    calls = {"n": 0}
    real = skip.iterator.next

    def every_other():
        x, y = real()
        calls["n"] += 1
        if calls["n"] % 2:
            x[0, 0, 0, 0] = np.nan
        return x, y

    skip.iterator.next = every_other
    history = skip.run()
    expected = (skip.steps_per_epoch + 1) // 2
    assert skip.steps_per_epoch >= 4 and skip.skipped_steps == expected == history[0]["skipped_steps"]
    assert np.isfinite(history[0]["loss"])
    assert any(not np.array_equal(v.d, before[k]) for k, v in net.get_parameters().items())


def test_bn_recalibration_sets_mean_of_batch_statistics():
    rng = np.random.default_rng(0)
    images = rng.normal(3.0, 2.0, size=(64, 2, 4, 4)).astype(np.float32)
    data = ArrayDataset(images, np.zeros(64, np.int32))
    net = ModuleList([BatchNorm2d(2)])
    recalibrate_bn(net, data, batch_size=16, batches=3, rng=np.random.default_rng(7))
    draw = np.random.default_rng(7)
    batches = [images[draw.choice(64, size=16, replace=False)] for _ in range(3)]
    expected_mean = np.mean([b.mean(axis=(0, 2, 3)) for b in batches], axis=0)
    params = net.get_parameters(grad_only=False)
    np.testing.assert_allclose(params["@0/mean"].d.ravel(), expected_mean, rtol=1e-5)
    var = params["@0/var"].d.ravel()
    assert np.all(np.abs(var - 4.0) < 1.0) and net[0].decay_rate == 0.9


def test_evaluate_network_counts_every_sample():
    data = synthetic(100)
    net = linear_net()
    full = evaluate_network(net, data.test, batch_size=7)
    x, y = data.test.images, data.test.labels
    net.training = False
    xv = nn.Variable.from_numpy_array(x)
    out = net(xv)
    out.forward()
    assert full["accuracy"] == pytest.approx(np.mean(out.d.argmax(1) == y[:, 0]))


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, lr_schedule="cosine", optimizer=OptimizerConfig(lr=1.0))
    s = make_scheduler(cfg, steps_per_epoch=10)
    lrs = [s.get_learning_rate(i) for i in range(100)]
    cosine = [0.5 * (1 + np.cos(i / 100 * np.pi)) for i in range(100)]
    assert lrs[0] == pytest.approx(cosine[0] / 20) and lrs[9] == pytest.approx(cosine[9] * 10 / 20)
    assert lrs[20:] == pytest.approx(cosine[20:])
    assert lrs[99] < 0.001 and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    step = make_scheduler(
        TrainConfig(epochs=10, lr_schedule="step", step_epochs=3, step_gamma=0.5, optimizer=OptimizerConfig(lr=1.0)),
        steps_per_epoch=10,
    )
    assert [step.get_learning_rate(i) for i in (0, 29, 30, 60, 99)] == [1.0, 1.0, 0.5, 0.25, 0.125]


def test_rebuilding_the_graph_every_step_keeps_nothing_in_nnablas_global_graph_builder(proxyless, tiny_params):
    """Module calls are traced into a global ProtoGraphBuilder; training graphs are built untraced (no leak)."""
    import nnabla.core.graph_def as graph_def

    from search_space.spec import DataInfo

    supernet = proxyless.build_supernet(tiny_params, DataInfo(4, 1, 8))
    uniform = TRAINING_STRATEGIES.get("uniform")
    loop = make_loop(supernet, synthetic(64), uniform(uniform.Params()), TrainConfig(epochs=1, batch_size=8))
    before = len(graph_def.proto_graph_builder.networks)
    for _ in range(5):
        loop.train_step()
    evaluate_network(supernet, synthetic(64).valid, 16)
    assert loop._graph_key is not None and len(graph_def.proto_graph_builder.networks) == before


def test_retrain_checkpoint_of_another_architecture_is_set_aside(tmp_path):
    """A resumed run whose search found a different architecture retrains it from scratch."""
    from types import SimpleNamespace

    from agent.base import BaseAgent

    data = synthetic(64)
    cfg = TrainConfig(epochs=1, batch_size=16)
    first = make_loop(linear_net(), data, FixedNetwork({"op": "a"}), cfg)
    first.run()
    first.save_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="it trains {'op': 'a'}, not {'op': 'b'}"):
        make_loop(linear_net(), data, FixedNetwork({"op": "b"}), cfg).load_checkpoint(str(tmp_path))
    io = SimpleNamespace(checkpoint_dir=str(tmp_path))
    agent = SimpleNamespace(resume=True, io=io, logger=logging.getLogger("t"))
    other = BaseAgent.start(agent, make_loop(linear_net(), data, FixedNetwork({"op": "b"}), cfg))
    same = BaseAgent.start(agent, make_loop(linear_net(), data, FixedNetwork({"op": "a"}), cfg))
    assert other.epoch == 0 and same.epoch == 1
