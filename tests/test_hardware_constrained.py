"""hardware_constrained criterion: expected cost by hand and at one-hot alphas, gradients against float64
finite differences for both forms, the forms' shapes around the target, descent lowering the cost, no
supernet = the task loss, and the one-line errors."""

import math

import nnabla as nn
import nnabla.solvers as S
import numpy as np
import pytest

from core.errors import ArchitectureError, ConfigError
from core.registries import CRITERIA
from criterion.cross_entropy import CrossEntropy, LabelSmoothing, LabelSmoothingParams
from criterion.hardware_constrained import HardwareConstrained, expected_cost
from search_space.cost_model import AdditiveCost
from search_space.layers import ABCModule, Identity
from search_space.mutables import InputChoice, LayerChoice
from search_space.searchable import Searchable

Params = HardwareConstrained.Params


@pytest.fixture(scope="module")
def space(proxyless, tiny_params, digits_info):
    """The tiny ProxylessNAS supernet (6 labels, 6-7 candidates) and its FLOPs cost model."""
    supernet = proxyless.build_supernet(tiny_params, digits_info)
    cost_model = proxyless.build_lookup_table(tiny_params, digits_info).cost_model("flops")
    assert list(cost_model.table) == list(supernet.decisions())
    return supernet, cost_model


def set_alphas(supernet, values):
    """Write ``{label: array}`` into the alphas and zero their gradients."""
    for label, alpha in supernet.arch_parameters().items():
        alpha.d = np.asarray(values[label], np.float32)
        alpha.grad.zero()


def random_alphas(supernet, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {label: scale * rng.standard_normal(a.shape) for label, a in supernet.arch_parameters().items()}


@pytest.fixture(scope="module")
def batch():
    """Fixed logits/targets and their plain cross-entropy in float64."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 10))
    labels = rng.integers(0, 10, (6, 1))
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = float(-log_p[np.arange(6), labels[:, 0]].mean())
    return logits, labels, ce


def variables(batch):
    logits, labels, _ = batch
    return nn.Variable.from_numpy_array(logits.astype(np.float32)), nn.Variable.from_numpy_array(labels)


def forward(v):
    v.forward(clear_no_need_grad=True)
    return float(v.d)


# ---- float64 reference ---------------------------------------------------------------------------------


def expected64(alphas, cost_model):
    total = cost_model.base
    for label, row in cost_model.table.items():
        a = np.asarray(alphas[label], np.float64)
        p = np.exp(a - a.max())
        total += float((p / p.sum()) @ np.asarray(list(row.values())))
    return total


def loss64(alphas, cost_model, params, task, target):
    cost = expected64(alphas, cost_model)
    if params.form == "hinge":
        return task + params.hinge_weight * max(0.0, cost / target - 1.0)
    g = math.log(cost) if target is None else math.log1p((math.e - 1.0) * cost / target)
    return task * params.alpha_coef * g**params.beta


def finite_differences(alphas, f, eps=1e-5):
    grads = {}
    for label, a in alphas.items():
        g = np.zeros(len(a))
        for i in range(len(a)):
            up = {k: np.array(v, np.float64) for k, v in alphas.items()}
            down = {k: np.array(v, np.float64) for k, v in alphas.items()}
            up[label][i] += eps
            down[label][i] -= eps
            g[i] = (f(up) - f(down)) / (2 * eps)
        grads[label] = g
    return grads


# ---- expected cost -------------------------------------------------------------------------------------


def test_expected_cost_at_uniform_alphas_is_the_mean_of_each_labels_costs(space):
    supernet, cost_model = space
    set_alphas(supernet, {label: np.zeros(a.shape) for label, a in supernet.arch_parameters().items()})
    by_hand = cost_model.base + sum(sum(row.values()) / len(row) for row in cost_model.table.values())
    assert forward(expected_cost(supernet, cost_model)) == pytest.approx(by_hand, rel=1e-6)


def test_expected_cost_at_one_hot_alphas_is_the_architectures_cost(space):
    supernet, cost_model = space
    rng = np.random.default_rng(0)
    archs = [supernet.choices().sample(rng) for _ in range(5)]
    archs += [{label: min(row, key=row.get) for label, row in cost_model.table.items()}]
    archs += [{label: max(row, key=row.get) for label, row in cost_model.table.items()}]
    cost = expected_cost(supernet, cost_model)
    for arch in archs:
        one_hot = {}
        for label, d in supernet.decisions().items():
            a = np.zeros(len(d.choice.values))
            a[d.choice.values.index(arch[label])] = 40.0
            one_hot[label] = a
        set_alphas(supernet, one_hot)
        assert forward(cost) == pytest.approx(cost_model.cost(arch), rel=1e-6)
    assert forward(cost) == pytest.approx(cost_model.max_cost(), rel=1e-6)


# ---- gradients -----------------------------------------------------------------------------------------

CASES = {
    "multiplicative, target": (Params(), 0.8),  # target as a fraction of the uniform expected cost
    "multiplicative, no target": (Params(alpha_coef=0.5, beta=0.8), None),
    "multiplicative, smoothed": (Params(smoothing=0.1), 1.3),
    "hinge": (Params(form="hinge", hinge_weight=2.0), 0.7),
}


@pytest.mark.parametrize("case", list(CASES))
def test_alpha_gradients_match_float64_finite_differences(case, space, batch):
    supernet, cost_model = space
    params, fraction = CASES[case]
    set_alphas(supernet, {label: np.zeros(a.shape) for label, a in supernet.arch_parameters().items()})
    target = (
        None
        if fraction is None
        else fraction * expected64({k: np.zeros(a.shape) for k, a in supernet.arch_parameters().items()}, cost_model)
    )
    alphas = random_alphas(supernet, seed=list(CASES).index(case), scale=0.7)
    set_alphas(supernet, alphas)
    logits, labels = variables(batch)
    loss = HardwareConstrained(params)(logits, labels, supernet=supernet, cost_model=cost_model, target_hc=target)
    loss.forward()
    loss.backward()
    task = batch[2]
    if params.smoothing:
        task = forward(LabelSmoothing(LabelSmoothingParams(params.smoothing))(*variables(batch)))
    if params.form == "hinge":
        assert expected64(alphas, cost_model) > target * 1.05  # away from the kink
    assert float(loss.d) == pytest.approx(loss64(alphas, cost_model, params, task, target), rel=1e-5)
    fd = finite_differences(alphas, lambda a: loss64(a, cost_model, params, task, target))
    got = {label: a.g.astype(np.float64) for label, a in supernet.arch_parameters().items()}
    scale = max(np.abs(g).max() for g in fd.values())
    worst = max(np.abs(got[k] - fd[k]).max() for k in fd) / scale
    assert scale > 0 and worst < 1e-3, (case, worst)
    for label in fd:  # every alpha, component by component, where the gradient is not negligible
        big = np.abs(fd[label]) > 1e-2 * scale
        np.testing.assert_allclose(got[label][big], fd[label][big], rtol=1e-3, err_msg=f"{case}: {label}")

    # and the nnabla graph's own forward, perturbed along a random direction, agrees (float32, eps 1e-2)
    direction = random_alphas(supernet, seed=7)
    along = sum(float(got[k] @ direction[k]) for k in got)
    values = []
    for sign in (1, -1):
        set_alphas(supernet, {k: alphas[k] + sign * 1e-2 * direction[k] for k in alphas})
        values.append(forward(loss))
    assert (values[0] - values[1]) / 2e-2 == pytest.approx(along, rel=1e-2)


# ---- the forms around the target -----------------------------------------------------------------------


def uniform(supernet, cost_model):
    zeros = {label: np.zeros(a.shape) for label, a in supernet.arch_parameters().items()}
    set_alphas(supernet, zeros)
    return expected64(zeros, cost_model)


def test_hinge_is_zero_below_the_target_and_grows_above_it(space, batch):
    supernet, cost_model = space
    cost = uniform(supernet, cost_model)
    criterion = HardwareConstrained(Params(form="hinge", hinge_weight=3.0))
    task = batch[2]
    penalties = []
    for target in (2.0 * cost, 1.001 * cost, cost / 1.2, cost / 1.5, cost / 3.0):
        set_alphas(supernet, {label: np.zeros(a.shape) for label, a in supernet.arch_parameters().items()})
        loss = criterion(*variables(batch), supernet=supernet, cost_model=cost_model, target_hc=target)
        loss.forward()
        loss.backward()
        penalties.append(float(loss.d) - task)
        moved = max(np.abs(a.g).max() for a in supernet.arch_parameters().values())
        assert (moved > 0) == (target < cost)  # no pressure on the alphas below the target
    assert penalties[:2] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert penalties[2:] == pytest.approx([3.0 * 0.2, 3.0 * 0.5, 3.0 * 2.0], rel=1e-5)


def test_multiplicative_factor_is_one_at_the_target_and_monotone(space, batch):
    supernet, cost_model = space
    cost = uniform(supernet, cost_model)
    params = Params(alpha_coef=0.2, beta=0.6)
    criterion = HardwareConstrained(params)
    task = batch[2]

    def factor(target):
        loss = criterion(*variables(batch), supernet=supernet, cost_model=cost_model, target_hc=target)
        return forward(loss) / (params.alpha_coef * task)

    assert factor(cost) == pytest.approx(1.0, rel=1e-5)
    ratios = [0.01, 0.3, 1.0, 3.0, 100.0]
    factors = [factor(cost / r) for r in ratios]  # cost / target = r
    assert factors == pytest.approx([math.log1p((math.e - 1) * r) ** 0.6 for r in ratios], rel=1e-5)
    assert all(0 < a < b for a, b in zip(factors, factors[1:]))
    # unit-free: the same space in MFLOPs with the target in MFLOPs gives the same loss
    mega = AdditiveCost(
        cost_model.base / 1e6, {k: {v: c / 1e6 for v, c in r.items()} for k, r in cost_model.table.items()}
    )
    loss = criterion(*variables(batch), supernet=supernet, cost_model=mega, target_hc=cost / 1e6 / 3.0)
    assert forward(loss) / (params.alpha_coef * task) == pytest.approx(factors[3], rel=1e-5)
    # without a target: FBNet verbatim, CE * alpha * log(cost) ** beta
    loss = criterion(*variables(batch), supernet=supernet, cost_model=cost_model)
    assert forward(loss) == pytest.approx(task * 0.2 * math.log(cost) ** 0.6, rel=1e-5)


@pytest.mark.parametrize("form", ["multiplicative", "hinge"])
def test_gradient_descent_on_the_alphas_lowers_the_expected_cost(form, space, batch):
    supernet, cost_model = space
    start = uniform(supernet, cost_model)
    alphas = supernet.arch_parameters()
    loss = HardwareConstrained(Params(form=form))(
        *variables(batch), supernet=supernet, cost_model=cost_model, target_hc=0.5 * start
    )
    cost = expected_cost(supernet, cost_model)
    solver = S.Adam(alpha=0.1)
    solver.set_parameters(dict(alphas))
    trace = []
    for _ in range(15):
        solver.zero_grad()
        loss.forward()
        loss.backward()
        solver.update()
        trace.append(forward(cost))
    assert trace[-1] < 0.8 * start and all(b < a for a, b in zip(trace, trace[1:]))
    # the cheapest candidate of every label gained probability
    for label, d in supernet.decisions().items():
        row = cost_model.table[label]
        cheapest = d.choice.values.index(min(row, key=row.get))
        assert d.probabilities()[cheapest] > 1.0 / len(row)


# ---- no supernet, registry, errors ---------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_without_a_supernet_it_is_the_task_loss(smoothing, space, batch):
    supernet, cost_model = space
    criterion = HardwareConstrained(Params(smoothing=smoothing))
    plain = CrossEntropy(CrossEntropy.Params()) if smoothing == 0 else LabelSmoothing(LabelSmoothingParams(smoothing))
    want = forward(plain(*variables(batch)))
    assert forward(criterion(*variables(batch))) == want
    assert forward(criterion(*variables(batch), cost_model=cost_model, target_hc=1.0, supernet=None)) == want
    if smoothing == 0:
        assert want == pytest.approx(batch[2], rel=1e-6)


def test_registered_with_checked_params():
    assert CRITERIA.get("hardware_constrained") is HardwareConstrained
    assert Params() == Params(form="multiplicative", alpha_coef=0.2, beta=0.6, hinge_weight=1.0, smoothing=0.0)
    for bad in (Params(smoothing=1.0), Params(alpha_coef=0.0), Params(beta=-1.0), Params(hinge_weight=-0.1)):
        with pytest.raises(ConfigError):
            HardwareConstrained(bad)


class TinyNet(Searchable, ABCModule):
    """Two LayerChoices and an InputChoice (the decisions are all these tests need)."""

    def __init__(self):
        self.a = LayerChoice([Identity(), Identity()], label="a")
        self.b = LayerChoice({"x": Identity(), "y": Identity(), "z": Identity()}, label="b")
        self.skip = InputChoice(n_candidates=2, n_chosen=1, label="skip")

    def call(self, x):
        return self.skip([self.a(x), self.b(x)])


def test_tiny_space_by_hand_and_input_choices():
    net = TinyNet()
    zero_skip = {(0,): 0.0, (1,): 0.0}
    model = AdditiveCost(10.0, {"a": {"0": 1.0, "1": 3.0}, "b": {"x": 2.0, "y": 2.0, "z": 8.0}, "skip": zero_skip})
    net.decisions()["a"].ensure_alpha().d = [0.0, math.log(3.0)]  # p = (1/4, 3/4)
    net.decisions()["b"].ensure_alpha().d = [0.0, 0.0, math.log(2.0)]  # p = (1/4, 1/4, 1/2)
    cost = expected_cost(net, model)
    assert forward(cost) == pytest.approx(10.0 + (1 / 4 + 9 / 4) + (2 / 4 + 2 / 4 + 8 / 2), rel=1e-6)
    assert forward(expected_cost(net, AdditiveCost(5.0, {"b": {"x": 0.0, "y": 0.0, "z": 4.0}}))) == pytest.approx(7.0)

    costed = AdditiveCost(10.0, {"a": {"0": 1.0, "1": 3.0}, "skip": {(0,): 0.0, (1,): 2.0}})
    with pytest.raises(ArchitectureError, match="'skip'") as err:
        HardwareConstrained(Params())(*variables_tiny(), supernet=net, cost_model=costed, target_hc=12.0)
    assert "\n" not in str(err.value)
    with pytest.raises(ArchitectureError, match="'other' is not a decision"):
        expected_cost(net, AdditiveCost(0.0, {"other": {"v": 1.0}}))


def variables_tiny():
    logits = nn.Variable.from_numpy_array(np.zeros((2, 3), np.float32))
    return logits, nn.Variable.from_numpy_array(np.array([[0], [2]]))


def test_one_line_config_errors(space):
    supernet, cost_model = space
    with pytest.raises(ConfigError, match=r"^criterion\.form: hinge needs hardware\.target_hc$"):
        HardwareConstrained(Params(form="hinge"))(*variables_tiny(), supernet=supernet, cost_model=cost_model)
    cheap = AdditiveCost(0.5, {label: {v: 0.0 for v in row} for label, row in cost_model.table.items()})
    with pytest.raises(ConfigError, match="needs every cost > 1") as err:
        HardwareConstrained(Params())(*variables_tiny(), supernet=supernet, cost_model=cheap)
    assert "\n" not in str(err.value)
    # with a target, costs below 1 are fine (the loss is unit-free)
    loss = HardwareConstrained(Params())(*variables_tiny(), supernet=supernet, cost_model=cheap, target_hc=0.5)
    assert forward(loss) == pytest.approx(0.2 * math.log(3.0))  # CE of zero logits over 3 classes, factor 1
    with pytest.raises(ConfigError, match="cost model"):
        HardwareConstrained(Params())(*variables_tiny(), supernet=supernet)


def test_gradient_reaches_only_alphas_that_change_the_cost(space):
    supernet, cost_model = space
    uniform(supernet, cost_model)
    cost = expected_cost(supernet, cost_model)
    cost.forward()
    cost.backward()
    for label, a in supernet.arch_parameters().items():
        row = np.asarray(list(cost_model.table[label].values()))
        p = np.full(len(row), 1.0 / len(row))
        np.testing.assert_allclose(a.g, p * (row - p @ row), rtol=1e-5, atol=1e-3)
