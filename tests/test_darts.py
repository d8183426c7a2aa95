"""The DARTS cell space: shared labels, a gated lookup table equal to counts of the derived standalone networks,
pruned standalone networks, the expected gated cost and its gradient, drop-path, the auxiliary head, and a
search -> retrain -> test run."""

import json

import nnabla as nn
import numpy as np
import pytest

import main
from core.registries import CRITERIA, SEARCH_SPACES
from criterion.hardware_constrained import expected_cost
from hardware.counter import count_module
from search_space.choices import Subset
from search_space.cost_model import GatedCost
from search_space.darts import DARTSParams
from search_space.darts.darts_supernet import DropPath
from search_space.freeform import Unused
from search_space.mutables import LayerChoice
from search_space.spec import DataInfo
from training_strategy.base import FixedNetwork, StrategyContext, module_tree

INFO = DataInfo(10, 1, 8)
TINY = DARTSParams(init_channels=4, layers=3, nodes=2)  # cells: normal (C=4, 8x8), reduce (8, 4x4), reduce (16, 2x2)


@pytest.fixture(scope="module")
def space():
    return SEARCH_SPACES.get("DARTS")


@pytest.fixture(scope="module")
def table(space):
    return space.build_lookup_table(TINY, INFO)


def test_one_normal_and_one_reduction_cell_are_searched(space):
    choices = space.choices(TINY, INFO)
    # per cell kind: node 0 has 2 edges, node 1 has 3, plus one input choice per node
    assert len(choices) == 2 * (2 + 3 + 2)
    assert choices == space.choices(DARTSParams(init_channels=4, layers=5, nodes=2), INFO)  # more cells, same labels
    assert choices["normal_n1_in"] == Subset(3, 2) and len(choices["reduce_n0_e1"]) == 8


def test_table_counts_an_edge_only_while_its_node_takes_it(space, table):
    choices = table.choices
    model = table.cost_model("flops")
    assert isinstance(model, GatedCost)
    assert table.gates["normal_n1_in"] == {0: ["normal_n1_e0"], 1: ["normal_n1_e1"], 2: ["normal_n1_e2"]}
    # a sep_conv_3x3 edge of the one normal cell (4 channels, 8x8): twice (depthwise 3x3 + pointwise 1x1)
    sep = choices["normal_n0_e0"].values.index("sep_conv_3x3")
    assert table.info_table["flops"]["normal_n0_e0"][sep] == 2 * (64 * 4 * 9 + 64 * 4 * 4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = choices.sample(rng)
        net = space.build_model(TINY, INFO, arch)
        counted = count_module(net, (1, 8, 8))
        assert counted["flops"] == table.predict(arch, "flops")
        assert counted["params"] == table.predict(arch, "params")
        unchosen = [j for j in range(3) if j not in arch["normal_n1_in"]][0]
        for op in ("sep_conv_5x5", "zero"):  # the op of an edge the node does not take costs nothing
            assert table.predict({**arch, f"normal_n1_e{unchosen}": op}, "flops") == table.predict(arch, "flops")


def test_standalone_network_keeps_only_the_chosen_edges(space):
    choices = space.choices(TINY, INFO)
    arch = {label: c.values[0] for label, c in choices.items()}  # max_pool everywhere, inputs (0, 1)
    arch.update({"normal_n0_e1": "sep_conv_3x3", "normal_n1_in": (0, 2), "normal_n1_e2": "dil_conv_5x5"})
    net = space.build_model(TINY, INFO, arch)
    edges = [m for m in module_tree(net) if isinstance(m, LayerChoice)]
    assert len(edges) == 3 * 5 and all(len(e.candidates) == 1 for e in edges)
    assert sum(isinstance(e.candidates[0], Unused) for e in edges) == 3  # node 1 drops one of 3 edges per cell
    names = list(net.get_parameters())
    normal = "@net/@cells/@0/@edges"
    assert f"{normal}/@1/@2/@candidates/@0/@depthwise/W" in names  # node 1's chosen dil_conv_5x5 edge
    assert f"{normal}/@0/@1/@candidates/@0/@ops/@1/@pointwise/W" in names  # node 0's sep_conv_3x3 (2 stacked)
    assert not [n for n in names if n.startswith(f"{normal}/@1/@1/")]  # the edge node 1 does not take


def test_expected_gated_cost_and_its_gradient(space, table):
    supernet = space.build_supernet(TINY, INFO)
    model = table.cost_model("flops")
    rng = np.random.default_rng(1)
    alphas = supernet.arch_parameters()
    for a in alphas.values():
        a.d = rng.normal(0, 1, a.shape)

    def reference(values):
        total = model.additive.base
        for label, row in model.additive.table.items():
            d = supernet.decisions()[label]
            if isinstance(d.choice, Subset):
                continue
            p = np.exp(values[label] - values[label].max())
            total += float((p / p.sum()) @ np.array([row[v] for v in d.choice.values]))
        for t in model.terms:
            g = values[t.gate]
            w = 2.0 * np.exp(g - g.max()) / np.exp(g - g.max()).sum()
            a = values[t.label]
            p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
            total += w[t.index] * float(p @ np.array([t.costs[v] for v in supernet.decisions()[t.label].choice.values]))
        return total

    values = {k: a.d.astype(np.float64) for k, a in alphas.items()}
    cost = expected_cost(supernet, model)
    for a in alphas.values():
        a.grad.zero()
    cost.forward()
    cost.backward()
    assert float(cost.d) == pytest.approx(reference(values), rel=1e-5)
    for label, i in (("normal_n1_in", 2), ("normal_n1_e2", 4), ("reduce_n0_e0", 3)):
        eps = 1e-4
        up = {k: v.copy() for k, v in values.items()}
        down = {k: v.copy() for k, v in values.items()}
        up[label][i] += eps
        down[label][i] -= eps
        fd = (reference(up) - reference(down)) / (2 * eps)
        assert alphas[label].g[i] == pytest.approx(fd, rel=2e-3, abs=1e-3 * abs(fd) + 1e-6)


def test_drop_path_zeroes_whole_samples_and_follows_its_schedule(space):
    rate = nn.Variable.from_numpy_array(np.array(0.5, np.float32))
    drop = DropPath(rate)
    drop.training = True
    x = nn.Variable.from_numpy_array(np.ones((400, 2, 2, 2), np.float32))
    nn.random.seed(0)
    y = drop(x)
    y.forward()
    per_sample = y.d.reshape(400, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0} and (per_sample == per_sample[:, :1]).all()
    assert 0.4 < (per_sample[:, 0] == 0).mean() < 0.6
    drop.training = False
    assert drop(x) is x
    # the retrained network's rate rises linearly over the epochs (DARTS): 0 at the start, p * e / epochs after
    net = space.build_model(DARTSParams(init_channels=4, layers=3, nodes=2, drop_path_prob=0.3), INFO,
                            space.choices(TINY, INFO).sample(np.random.default_rng(0)))  # fmt: skip
    policy = FixedNetwork()
    context = StrategyContext(CRITERIA.get("cross_entropy")(None), np.random.default_rng(0), None, None, 8, epochs=10)
    policy.setup(net, context)
    assert len(policy.schedules) == 1
    policy.before_step(net, 4, 0, np.random.default_rng(0))
    assert float(policy.schedules[0].rate.d) == pytest.approx(0.3 * 4 / 10)


def test_auxiliary_head_adds_its_weighted_loss(space):
    params = DARTSParams(init_channels=4, layers=3, nodes=2, auxiliary_weight=0.4)
    net = space.build_model(params, INFO, space.choices(params, INFO).sample(np.random.default_rng(2)))
    criterion = CRITERIA.get("cross_entropy")(None)
    context = StrategyContext(criterion, np.random.default_rng(0), None, None, 8)
    net.training = True
    x, t, logits, loss = context.loss_graph(net, 8, (1, 8, 8))
    rng = np.random.default_rng(0)
    x.d, t.d = rng.normal(size=x.shape), rng.integers(0, 10, t.shape)
    (aux_weight, aux_logits), = [a for m in [net.net] for a in [m.auxiliary]]  # fmt: skip
    aux_logits.persistent = True
    loss.forward()

    def ce(z):
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -logp[np.arange(8), t.d[:, 0].astype(int)].mean()

    assert aux_weight == 0.4
    assert float(loss.d) == pytest.approx(ce(logits.d) + 0.4 * ce(aux_logits.d), rel=1e-5)
    net.training = False
    net(nn.Variable((1, 1, 8, 8)))
    assert net.net.auxiliary is None  # inference (evaluation, export) computes no auxiliary head


@pytest.mark.slow
def test_darts_search_retrain_test(tmp_path):
    args = ["-c", "configs/darts_differentiable.yml", "--title", "darts", "--output-dir", str(tmp_path), "--quiet",
            "search_space.init_channels=4", "search_space.layers=3", "search_space.nodes=2",
            "train.epochs=2", "train.max_steps_per_epoch=3", "retrain.epochs=1", "retrain.max_steps_per_epoch=3",
            "search.valid_batches=1"]  # fmt: skip
    assert main.main(args) == 0
    run = tmp_path / "darts"
    metrics = json.loads((run / "metrics.json").read_text())
    arch = SEARCH_SPACES.get("DARTS").choices(TINY, INFO).validate(metrics["arch"])
    assert all(arch[label] != "zero" for label in arch if "_e" in label)  # derivation never keeps a Zero edge
    assert metrics["model_flops"] == metrics["flops"] and 0.0 < metrics["test_accuracy"] <= 1.0
    assert metrics["export"]["onnx_max_abs_diff"] <= 1e-4


def test_single_path_steps_train_only_the_edges_their_nodes_take(space, table):
    supernet = space.build_supernet(TINY, INFO)
    supernet.set_gates(table.path_gates)
    arch = supernet.choices().sample(np.random.default_rng(3))
    arch["normal_n1_in"] = (0, 2)
    supernet.set_active(arch)
    groups = supernet.active_groups()
    normal_n1 = [g for g in groups if g.startswith("cells/0/edges/1/")]
    assert sorted(g.split("/")[4] for g in normal_n1) == ["0", "2"]  # edge 1 is computed but not read
    assert len([g for g in groups if "/edges/" in g]) == 3 * 4  # 2 edges per node, 2 nodes, 3 cells
    supernet.set_mode("full")
    assert len([g for g in supernet.active_groups() if "/edges/" in g]) == 3 * 5 * len(TINY.ops)
