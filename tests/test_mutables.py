"""Mutables: LayerChoice / InputChoice modes against candidates computed one by one, shared labels, arch
parameters owned once and never in a weight group, nested choices, and alphas through a checkpoint."""

import logging

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from core.config import TrainConfig
from core.errors import ArchitectureError
from core.registries import CRITERIA, DATASETS
from core.run_logging import Monitor
from core.seed import make_rng, seed_nnabla
from search_space.layers import ABCModule, Conv2d, GlobalAvgPool, Linear, ModuleList
from search_space.mutables import InputChoice, LayerChoice
from search_space.searchable import Searchable
from training_strategy.base import FixedNetwork
from training_strategy.loop import RunIO, TrainLoop


class Net(Searchable, ABCModule):
    """Seed 001's example: a LayerChoice between two convs, an optional skip (InputChoice(1)), a concat."""

    def __init__(self):
        self.conv1 = LayerChoice([Conv2d(1, 4, 3), Conv2d(1, 4, 5)])
        self.conv2 = Conv2d(4, 4, 3)
        self.skipcon = InputChoice(n_candidates=1, n_chosen=None)
        self.merge = InputChoice(n_candidates=3, n_chosen=2, reduction="concat", label="merge")
        self.head = LayerChoice({"wide": Conv2d(8, 4, 1), "narrow": Conv2d(8, 4, 3)}, label="head")
        self.pool = GlobalAvgPool()
        self.fc = Linear(4, 3)

    def call(self, x):
        a = F.relu(self.conv1(x))
        b = self.conv2(a)
        skip = self.skipcon([a])
        if skip is not None:
            b = b + skip
        m = self.merge([a, b, a * 0.5])
        return self.fc(self.pool(self.head(m)))


def forward(net, x_np):
    x = nn.Variable.from_numpy_array(x_np)
    y = net(x)
    y.forward()
    return y.d.copy()


@pytest.fixture
def net():
    seed_nnabla(make_rng(0))
    return Net()


def test_choices_are_derived_from_the_module_tree(net):
    choices = net.choices()
    assert list(choices) == ["conv1", "skipcon", "merge", "head"]  # unlabelled ones named after their place
    assert choices["conv1"].values == ("0", "1") and choices["head"].values == ("wide", "narrow")
    assert choices["skipcon"].values == ((), (0,)) and len(choices["merge"]) == 3
    assert choices.size() == 2 * 2 * 3 * 2


def test_sample_mode_computes_exactly_the_chosen_path(net):
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    net.set_active({"conv1": "1", "skipcon": [], "merge": [0, 2], "head": "wide"})
    got = forward(net, x)
    # by hand: conv1 = the 5x5 candidate, no skip, concat of inputs 0 and 2
    xv = nn.Variable.from_numpy_array(x)
    a = F.relu(net.conv1.candidates[1](xv))
    m = F.concatenate(a, a * 0.5, axis=1)
    ref = net.fc(net.pool(net.head.candidates[0](m)))
    ref.forward()
    np.testing.assert_allclose(got, ref.d, rtol=1e-6)
    y = net(nn.Variable((2, 1, 8, 8)))
    types = []
    y.visit(lambda f: types.append((f.info.type_name, tuple(f.inputs[1].shape) if len(f.inputs) > 1 else None)))
    assert ("Convolution", (4, 1, 3, 3)) not in types and ("Convolution", (4, 1, 5, 5)) in types  # one conv1 only


def test_full_mode_is_the_softmax_weighted_sum_and_max_is_the_argmax(net):
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32)
    xv = nn.Variable.from_numpy_array(x)
    choice = net.conv1
    choice.decision.ensure_alpha().d = np.array([0.3, -1.2], np.float32)
    choice.decision.mode = "full"
    y = choice(xv)
    y.forward()
    w = np.exp([0.3, -1.2]) / np.exp([0.3, -1.2]).sum()
    outs = []
    for c in choice.candidates:
        o = c(xv)
        o.forward()
        outs.append(o.d.copy())
    np.testing.assert_allclose(y.d, w[0] * outs[0] + w[1] * outs[1], rtol=1e-5, atol=1e-6)
    choice.decision.mode = "max"
    y = choice(xv)
    y.forward()
    np.testing.assert_allclose(y.d, outs[0], rtol=1e-6)
    choice.decision.alpha.d = np.array([0.0, 2.0], np.float32)
    y = choice(xv)
    y.forward()
    np.testing.assert_allclose(y.d, outs[1], rtol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean", "concat", "none"])
def test_input_choice_reductions(reduction):
    rng = np.random.default_rng(2)
    xs_np = [rng.normal(size=(2, 3, 4, 4)).astype(np.float32) for _ in range(3)]
    xs = [nn.Variable.from_numpy_array(a) for a in xs_np]
    choice = InputChoice(3, 2, reduction=reduction, label="in")
    choice.decision.set([2, 0])
    out = choice(xs)
    if reduction == "none":
        assert [o is xs[i] for o, i in zip(out, (0, 2))] == [True, True]
        return
    out.forward()
    expected = {
        "sum": xs_np[0] + xs_np[2],
        "mean": (xs_np[0] + xs_np[2]) / 2,
        "concat": np.concatenate([xs_np[0], xs_np[2]], axis=1),
    }[reduction]
    np.testing.assert_allclose(out.d, expected, rtol=1e-6)
    if reduction in ("sum", "mean"):  # full mode: inputs weighted by k * softmax(alpha)
        choice.decision.ensure_alpha().d = np.array([1.0, 0.0, -1.0], np.float32)
        choice.decision.mode = "full"
        out = choice(xs)
        out.forward()
        w = 2 * np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
        full = sum(wi * a for wi, a in zip(w, xs_np)) / (2 if reduction == "mean" else 1)
        np.testing.assert_allclose(out.d, full, rtol=1e-5)
        choice.decision.mode = "max"  # the top-2 alphas: inputs 0 and 1
        out = choice(xs)
        out.forward()
        np.testing.assert_allclose(out.d, (xs_np[0] + xs_np[1]) / (2 if reduction == "mean" else 1), rtol=1e-6)


def test_choose_none_returns_none():
    skip = InputChoice(1, None, label="skip")
    skip.decision.set([])
    assert skip([nn.Variable((1, 2, 2, 2))]) is None


class Shared(Searchable, ABCModule):
    """Two positions sharing one label, and a LayerChoice nested inside another's candidate."""

    def __init__(self):
        self.a = LayerChoice([Conv2d(2, 2, 3), Conv2d(2, 2, 1)], label="op")
        self.b = LayerChoice([Conv2d(2, 2, 3), Conv2d(2, 2, 1)], label="op")
        inner = LayerChoice([Conv2d(2, 2, 3), Conv2d(2, 2, 5)], label="inner")
        self.outer = LayerChoice([ModuleList([inner]), Conv2d(2, 2, 1)], label="outer")

    def call(self, x):
        return self.outer(self.b(self.a(x)))


def test_shared_labels_share_one_decision_and_one_alpha_never_in_a_weight_group():
    net = Shared()
    assert list(net.choices()) == ["op", "outer", "inner"]
    assert net.a.decision is net.b.decision
    alphas = net.arch_parameters()
    assert list(alphas) == ["op", "outer", "inner"] and all(alphas[k] is v for k, v in net.arch_parameters().items())
    grouped = {id(v) for g in net.weight_groups().values() for v in g.values()}
    assert not grouped & {id(v) for v in alphas.values()}
    assert not any(name.endswith("alpha") for g in net.weight_groups().values() for name in g)
    assert len(net.get_parameters(grad_only=True)) == sum(len(g) for g in net.weight_groups().values())
    net.set_active({"op": "1", "outer": "1", "inner": "1"})
    assert "outer/candidates/0/0/1" not in net.active_groups()  # the nested choice is off the path
    net.set_active({"op": "1", "outer": "0", "inner": "1"})
    assert {"a/1", "b/1", "outer/0", "outer/candidates/0/0/1"} <= set(net.active_groups())
    with pytest.raises(ArchitectureError, match="shared by choices with different values"):

        class Clash(Searchable, ABCModule):
            def __init__(self):
                self.a = LayerChoice([Conv2d(2, 2, 3)], label="x")
                self.b = LayerChoice([Conv2d(2, 2, 3), Conv2d(2, 2, 1)], label="x")

        Clash().choices()


def test_arch_parameters_survive_a_checkpoint(tmp_path, net):
    ds = DATASETS.get("synthetic")
    data = ds(ds.Params(num_classes=3, channels=1, input_size=8, samples=96)).load()
    crit = CRITERIA.get("cross_entropy")(CRITERIA.get("cross_entropy").Params())
    io = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=16)
    loop = TrainLoop(net, crit, data.train, cfg, FixedNetwork(), make_rng(0), io, "t")
    alphas = net.arch_parameters()
    for i, v in enumerate(alphas.values()):
        v.d = np.arange(v.shape[0], dtype=np.float32) * (i + 1)
    loop.save_checkpoint(str(tmp_path))
    other = Net()
    TrainLoop(
        other, crit, data.train, TrainConfig(epochs=1, batch_size=16), FixedNetwork(), make_rng(1), io, "t"
    ).load_checkpoint(str(tmp_path))
    for label, v in other.arch_parameters().items():
        np.testing.assert_array_equal(v.d, alphas[label].d)
    assert other.derived_arch() == net.derived_arch()
