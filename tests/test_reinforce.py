"""REINFORCE: exact conditioned sampling and scores, the baseline by hand, independent labels, known optima of a
space far larger than the evaluation budget (free and under a binding budget), Subsets, resume via the journal."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main
from agent.search_journal import SearchJournal
from core.errors import ArchitectureError, ConfigError
from core.registries import SEARCH_STRATEGIES
from core.typed import from_dict
from search_space.choices import Categorical, SearchSpaceChoices, Subset
from search_space.cost_model import AdditiveCost
from search_strategy.base import Budget
from search_strategy.numpy_optim import Optimizer, RewardBaseline
from search_strategy.policy import ArchPolicy, Conditioned, softmax, value_costs
from search_strategy.reinforce import ReinforceParams, ReinforceSearch

ROOT = Path(__file__).resolve().parents[1]
LABELS, VALUES = 10, 4  # 4**10 = 1,048,576 architectures
_g = np.random.default_rng(0)
#: each label ranks its values by a random permutation (a gap of >= 1/8 between a label's values)
SCORES = _g.uniform(0.5, 1.5, (LABELS, 1)) * np.array([_g.permutation(VALUES) for _ in range(LABELS)]) / VALUES
#: better values tend to cost more, so the unconstrained optimum is over budget
COSTS = _g.uniform(0.2, 1.0, (LABELS, 1)) * (SCORES + _g.uniform(0.0, 0.3, (LABELS, VALUES)))
CHOICES = SearchSpaceChoices({f"l{i}": Categorical(tuple(range(VALUES))) for i in range(LABELS)})
FLOPS = AdditiveCost(0.0, {f"l{i}": dict(enumerate(COSTS[i])) for i in range(LABELS)})
PARAMS = ReinforceParams(steps=150, batch=4, lr=0.07)


def accuracy(arch):
    return {"accuracy": float(sum(SCORES[i, arch[f"l{i}"]] for i in range(LABELS)))}


@pytest.fixture(scope="module")
def brute_force():
    """(best score, target, best score within the target, second best within it) over all 1,048,576 archs."""
    grid = np.indices((VALUES,) * LABELS, dtype=np.uint8).reshape(LABELS, -1)
    scores, costs = np.zeros(grid.shape[1]), np.zeros(grid.shape[1])
    for i in range(LABELS):
        scores += SCORES[i][grid[i]]
        costs += COSTS[i][grid[i]]
    target = float(np.median(costs))
    fits = np.sort(scores[costs <= target])[::-1]
    assert costs[scores.argmax()] > target  # the constraint binds
    return float(scores.max()), target, float(fits[0]), float(fits[1])


def test_finds_the_optimum_of_a_million_architectures_with_under_500_evaluations(brute_force):
    best, _, _, _ = brute_force
    for seed in range(5):
        result = ReinforceSearch(PARAMS).search(CHOICES, accuracy, Budget.unconstrained(), np.random.default_rng(seed))
        assert result.evaluations <= 500
        assert result.best_metrics["accuracy"] == pytest.approx(best, abs=1e-12)


def test_finds_the_best_in_budget_when_the_free_optimum_is_over_budget(brute_force):
    _, target, best, second = brute_force
    assert best - second > 0.05
    budget = Budget("flops", target, additive=FLOPS)
    found = 0
    for seed in range(5):
        result = ReinforceSearch(PARAMS).search(CHOICES, accuracy, budget, np.random.default_rng(seed))
        assert result.evaluations <= 500
        assert all(entry["cost"] <= target for entry in result.history)  # nothing over budget is ever evaluated
        assert result.best_metrics["accuracy"] >= second - 1e-12  # the best or the runner-up of ~524,000
        found += result.best_metrics["accuracy"] == pytest.approx(best, abs=1e-12)
    assert found >= 3


def test_opaque_cost_function_keeps_every_draw_in_budget(brute_force):
    _, target, _, _ = brute_force
    budget = Budget("flops", target, lambda arch: FLOPS.cost(arch))  # no additive model: probed from the function
    result = ReinforceSearch(ReinforceParams(steps=20, batch=4)).search(
        CHOICES, accuracy, budget, np.random.default_rng(0)
    )
    assert result.evaluations > 20 and all(entry["cost"] <= target for entry in result.history)


def test_conditioned_distribution_is_exact():
    """Marginals, normaliser and its gradient (q - p) against enumeration; draws against the marginals."""
    g = np.random.default_rng(3)
    logits = g.normal(size=(5, 3))
    costs = g.uniform(0.0, 1.0, (5, 3))
    target = 2.0
    probs = [softmax(z) for z in logits]

    def enumerate_mass(z):
        p = [softmax(r) for r in z]
        total, marg = 0.0, np.zeros((5, 3))
        for a in itertools.product(range(3), repeat=5):
            if sum(costs[i, a[i]] for i in range(5)) <= target:
                w = math.prod(p[i][a[i]] for i in range(5))
                total += w
                for i in range(5):
                    marg[i, a[i]] += w
        return math.log(total), marg / total

    dist = Conditioned(probs, 0.0, list(costs), target)
    log_mass, marginals = enumerate_mass(logits)
    assert dist.binding and dist.log_mass == pytest.approx(log_mass, abs=1e-9)
    np.testing.assert_allclose(np.array(dist.marginals()), marginals, atol=1e-9)
    eps, fd = 1e-5, np.zeros_like(logits)
    for i, v in itertools.product(range(5), range(3)):
        up, down = logits.copy(), logits.copy()
        up[i, v] += eps
        down[i, v] -= eps
        fd[i, v] = (enumerate_mass(up)[0] - enumerate_mass(down)[0]) / (2 * eps)
    np.testing.assert_allclose(marginals - np.array(probs), fd, atol=1e-6)  # d log Z / dz = q - p
    rng, counts = np.random.default_rng(0), np.zeros((5, 3))
    for _ in range(6000):
        a = dist.draw(rng)
        assert sum(costs[i, a[i]] for i in range(5)) <= target + 1e-12
        counts[np.arange(5), a] += 1
    np.testing.assert_allclose(counts / 6000, marginals, atol=0.025)


def test_labels_are_sampled_independently():
    """Each label its own draw from the run's rng: pairs of labels agree at chance rate, never in lockstep."""
    choices = SearchSpaceChoices({f"l{i}": Categorical(tuple(range(5))) for i in range(6)})
    result = ReinforceSearch(ReinforceParams(steps=1, batch=200)).search(
        choices, lambda a: {"accuracy": 0.0}, Budget.unconstrained(), np.random.default_rng(0)
    )
    archs = np.array([[h["arch"][f"l{i}"] for i in range(6)] for h in result.history[:-1]])
    assert len(archs) >= 190  # 200 draws out of 15,625 architectures: few repeats
    for i, j in itertools.combinations(range(6), 2):
        agree = float(np.mean(archs[:, i] == archs[:, j]))
        assert 0.1 < agree < 0.32  # chance: 1/5
    assert not any(len(set(row)) == 1 for row in archs[:20])


def test_baseline_by_hand():
    b = RewardBaseline(decay=0.5)
    np.testing.assert_allclose(b.advantages(np.array([1.0, 3.0])), [-1.0, 1.0])  # b = 2, spread 1 (first batch)
    assert (b.value, b.var) == (2.0, 1.0)
    np.testing.assert_allclose(b.advantages(np.array([5.0])), [3.0])  # (5 - 2) / sqrt(1)
    assert (b.value, b.var) == (3.5, 5.0)  # 0.5 * 2 + 0.5 * 5, 0.5 * 1 + 0.5 * 9
    plain = RewardBaseline(decay=0.9, normalize=False)
    plain.advantages(np.array([2.0]))
    np.testing.assert_allclose(plain.advantages(np.array([4.0, 0.0])), [2.0, -2.0])
    assert plain.value == pytest.approx(0.9 * 2.0 + 0.1 * 2.0)


def test_adam_and_sgd_minimise_a_quadratic():
    for opt in (Optimizer("adam", 0.1), Optimizer("sgd", 0.1, momentum=0.5)):
        x = np.array([3.0, -2.0])
        for _ in range(300):
            x = opt.step(x, 2.0 * (x - np.array([1.0, 1.0])))
        np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-3)
        state = opt.state_dict()
        again = Optimizer(opt.name, 0.1, momentum=opt.momentum)
        again.load_state_dict(state)
        assert again.step(x, np.ones(2)).tolist() == opt.step(x, np.ones(2)).tolist()


def test_subset_parametrisation():
    """k-of-n: p(S) ~ exp(sum of the chosen inputs' logits); any-of-n: independent Bernoulli inputs."""
    choices = SearchSpaceChoices({"pair": Subset(4, 2), "any": Subset(3, None)})
    policy = ArchPolicy(choices)
    assert policy.size == 7
    theta = np.array([2.0, 1.0, 0.0, -1.0, 0.5, -0.5, 1.0])
    pair, any_ = policy.probabilities(theta)
    weights = np.exp([2 + 1, 2 + 0, 2 - 1, 1 + 0, 1 - 1, 0 - 1])  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    np.testing.assert_allclose(pair, weights / weights.sum())
    sig = 1 / (1 + np.exp(-theta[4:]))
    expected = [math.prod(sig[i] if i in s else 1 - sig[i] for i in range(3)) for s in choices["any"].values]
    np.testing.assert_allclose(any_, expected)
    hints = policy.hints([pair, any_])
    np.testing.assert_allclose(hints["any"], sig)  # per-input inclusion probabilities
    assert sum(hints["pair"]) == pytest.approx(2.0)


def test_finds_the_optimum_with_subset_labels():
    choices = SearchSpaceChoices({"op": Categorical(("a", "b", "c")), "in": Subset(5, 2), "skip": Subset(4, None)})
    gain = {"a": 0.0, "b": 1.0, "c": 0.5}

    def evaluate(arch):
        value = gain[arch["op"]] + sum((0.3, 1.0, 0.1, 0.8, 0.0)[i] for i in arch["in"])
        return {"accuracy": value + sum((0.5, -0.5, 0.4, -0.2)[i] for i in arch["skip"])}

    for seed in range(3):
        result = ReinforceSearch(ReinforceParams(steps=60, batch=4)).search(
            choices, evaluate, Budget.unconstrained(), np.random.default_rng(seed)
        )
        assert result.best_arch == {"op": "b", "in": (1, 3), "skip": (0, 2)}


def test_reward_exponents():
    strategy = ReinforceSearch(ReinforceParams(cost_exponent=-0.07, over_exponent=-0.5))
    entry = {"metrics": {"accuracy": 0.9}, "cost": 50.0}
    assert strategy.reward(entry, 100.0) == pytest.approx(0.9 * 0.5**-0.07)  # cheaper than T: raised
    assert strategy.reward({**entry, "cost": 200.0}, 100.0) == pytest.approx(0.9 * 2.0**-0.5)  # dearer: lowered
    assert ReinforceSearch().reward({**entry, "cost": 200.0}, None) == 0.9
    with pytest.raises(ConfigError, match="search_strategy.reward_target"):
        strategy.search(CHOICES, accuracy, Budget.unconstrained(), np.random.default_rng(0))


@pytest.mark.parametrize(
    "params, field",
    [
        ({"steps": 0}, "steps"),
        ({"batch": 0}, "batch"),
        ({"lr": 0.0}, "lr"),
        ({"baseline_decay": 1.0}, "baseline_decay"),
        ({"beta2": -0.1}, "beta2"),
        ({"entropy_weight": -1.0}, "entropy_weight"),
        ({"cost_exponent": 2.0}, "cost_exponent"),
        ({"reward_target": 0.0}, "reward_target"),
    ],
)
def test_bad_params(params, field):
    with pytest.raises(ConfigError, match=f"^search_strategy.{field}: must be"):
        ReinforceSearch(ReinforceParams(**params))


def test_config_section():
    assert SEARCH_STRATEGIES.get("reinforce") is ReinforceSearch
    with pytest.raises(ConfigError, match="search_strategy.optimizer"):
        from_dict(ReinforceParams, {"optimizer": "rmsprop"}, "search_strategy")


def test_impossible_budget_is_one_line():
    budget = Budget("flops", FLOPS.min_cost() - 0.1, additive=FLOPS)
    with pytest.raises(ArchitectureError, match="no architecture within budget flops") as info:
        ReinforceSearch().search(CHOICES, accuracy, budget, np.random.default_rng(0))
    assert "\n" not in str(info.value)


def test_killed_search_resumes_through_the_journal_to_the_same_result(tmp_path, brute_force):
    """Deterministic given the rng and the metrics told: a journal replay continues exactly."""
    budget = Budget("flops", brute_force[1], additive=FLOPS)
    params = ReinforceParams(steps=30, batch=4)
    reference = ReinforceSearch(params).search(CHOICES, accuracy, budget, np.random.default_rng(5))
    path = str(tmp_path / "journal.jsonl")
    calls = {"n": 0}

    def dies_after_40(arch):
        calls["n"] += 1
        if calls["n"] > 40:
            raise KeyboardInterrupt  # the kill
        return accuracy(arch)

    journal = SearchJournal(path, {"run": 1})
    journal.open(resume=False)
    with pytest.raises(KeyboardInterrupt):
        ReinforceSearch(params).search(CHOICES, journal.wrap(dies_after_40), budget, np.random.default_rng(5))
    resumed = SearchJournal(path, {"run": 1})
    assert resumed.open(resume=True) == "replaying 40 journaled evaluations"
    result = ReinforceSearch(params).search(CHOICES, resumed.wrap(accuracy), budget, np.random.default_rng(5))
    assert resumed.replayed == 40
    assert result.to_dict() == reference.to_dict() and result.artifacts == reference.artifacts


def test_value_costs_and_no_nnabla():
    base, costs = value_costs(CHOICES, FLOPS)
    assert base == 0.0 and np.allclose(costs, COSTS)
    code = (
        "import sys\n"
        "import search_strategy.reinforce, search_strategy.architecture_generator, search_strategy.generator_model\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nnabla'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_tiny_real_search_run(tmp_path):
    """configs/proxylessnas_uniform_reinforce.yml, shrunk: in-budget history, the final policy in policy.json."""
    tiny = ["train.epochs=1", "train.warmup_epochs=0", "train.max_steps_per_epoch=3", "search_strategy.steps=3"]
    tiny += ["search.valid_batches=1", "search.bn_recalibration_batches=1", "search.retrain=false"]
    args = [
        "-c",
        "configs/proxylessnas_uniform_reinforce.yml",
        "--title",
        "rl",
        "--output-dir",
        str(tmp_path),
        "--quiet",
    ]
    args += tiny
    assert main.main(args) == 0
    run = tmp_path / "rl"
    history = json.loads((run / "search_history.json").read_text())
    assert 1 < history["evaluations"] <= 3 * 4 + 1
    assert all(h["cost"] <= 1_200_000 for h in history["history"])
    assert [h["generation"] for h in history["history"]] == sorted(h["generation"] for h in history["history"])
    policy = json.loads((run / "policy.json").read_text())["probabilities"]
    searched = json.loads((run / "searched_arch.json").read_text())
    assert set(policy) == set(searched["arch"]) and all(sum(p) == pytest.approx(1.0) for p in policy.values())
