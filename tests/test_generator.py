"""Architecture generator (SGNAS): gradients by finite differences, architectures that track the requested budget
on a toy space with a brute-forced optimum per budget, the generator file, resume via the journal, and the
generate agent on a tiny real search run."""

import itertools
import json
import os
import re

import numpy as np
import pytest

import main
from agent.search_journal import SearchJournal
from core.errors import CheckpointError, ConfigError
from search_space.choices import Categorical, SearchSpaceChoices, Subset
from search_space.cost_model import AdditiveCost, GatedCost, GatedTerm
from search_strategy.architecture_generator import ArchitectureGeneratorSearch, GeneratorParams
from search_strategy.base import Budget
from search_strategy.generator_model import GeneratorNet, TrainedGenerator
from search_strategy.policy import expected_cost, value_costs

LABELS, VALUES = 8, 4
_g = np.random.default_rng(3)
COSTS = np.sort(_g.uniform(0.1, 1.0, (LABELS, VALUES)), axis=1)
#: accuracy rises with cost, with diminishing returns and a different worth per label
SCORES = _g.uniform(0.5, 1.5, (LABELS, 1)) * np.sqrt(COSTS)
CHOICES = SearchSpaceChoices({f"l{i}": Categorical(tuple(range(VALUES))) for i in range(LABELS)})
FLOPS = AdditiveCost(0.0, {f"l{i}": dict(enumerate(COSTS[i])) for i in range(LABELS)})
LOW, HIGH = FLOPS.min_cost(), FLOPS.max_cost()
TARGETS = [LOW + f * (HIGH - LOW) for f in np.linspace(0.05, 0.95, 7)]


def accuracy(arch):
    return {"accuracy": float(sum(SCORES[i, arch[f"l{i}"]] for i in range(LABELS)) / SCORES.max(1).sum())}


def brute_force():
    grid = np.array(list(itertools.product(range(VALUES), repeat=LABELS)))
    scores = SCORES[np.arange(LABELS), grid].sum(1) / SCORES.max(1).sum()
    return scores, COSTS[np.arange(LABELS), grid].sum(1)


def load(result, tmp_path):
    path = tmp_path / "generator.npz"
    path.write_bytes(result.artifacts["generator.npz"])
    return TrainedGenerator.load(str(path))


@pytest.mark.parametrize("seed", [0, 1])
def test_generated_architectures_track_the_requested_budget(seed, tmp_path):
    result = ArchitectureGeneratorSearch().search(CHOICES, accuracy, Budget("flops", None, additive=FLOPS),
                                                  np.random.default_rng(seed))  # fmt: skip
    assert result.evaluations <= 60 * 4 * 2 + 1
    generator = load(result, tmp_path)
    scores, costs = brute_force()
    generated = [generator.generate(Budget("flops", t, additive=FLOPS), np.random.default_rng(0)) for t in TARGETS]
    cost = [FLOPS.cost(a) for a in generated]
    assert all(c <= t for c, t in zip(cost, TARGETS))  # each within its own budget
    assert cost == sorted(cost) and cost[-1] - cost[0] > 0.7 * (TARGETS[-1] - TARGETS[0])  # and tracks it
    gained, possible = 0.0, 0.0
    for arch, target in zip(generated, TARGETS):
        fits = scores[costs <= target]
        assert accuracy(arch)["accuracy"] >= fits.max() - 0.05  # within 0.05 of the best of the budget
        gained += accuracy(arch)["accuracy"] - fits.mean()
        possible += fits.max() - fits.mean()
    assert gained > 0.6 * possible  # most of what the best architectures gain over random in-budget ones


def test_run_budget_bounds_what_is_evaluated_and_trained(tmp_path):
    target = LOW + 0.6 * (HIGH - LOW)
    budget = Budget("flops", target, additive=FLOPS)
    result = ArchitectureGeneratorSearch(GeneratorParams(steps=30)).search(CHOICES, accuracy, budget,
                                                                            np.random.default_rng(0))  # fmt: skip
    assert all(entry["cost"] <= target for entry in result.history)
    assert budget.within(result.best_arch)
    scores, costs = brute_force()
    assert result.best_metrics["accuracy"] >= scores[costs <= target].max() - 0.03
    generator = load(result, tmp_path)
    assert generator.trained_range == (LOW, target) and generator.metric == "flops"
    above = generator.generate(Budget("flops", HIGH, additive=FLOPS), np.random.default_rng(0))
    at_top = generator.generate(Budget("flops", target, additive=FLOPS), np.random.default_rng(0))
    assert above == at_top  # a budget above the trained range is answered with the range's top


def test_generator_net_backward_matches_finite_differences():
    net = GeneratorNet.init(5, 7, np.random.default_rng(0))
    net.set_flat(np.random.default_rng(1).normal(size=net.flat().size))
    tau = np.array([0.0, 0.3, 0.9])
    weights = np.random.default_rng(2).normal(size=(3, 5))

    def loss(flat):
        net.set_flat(flat)
        return float((net.forward(tau)[0] * weights).sum())

    flat = net.flat()
    theta, cache = net.forward(tau)
    grad = net.backward(cache, weights)
    eps = 1e-6
    fd = [(loss(flat + eps * e) - loss(flat - eps * e)) / (2 * eps) for e in np.eye(flat.size)]
    np.testing.assert_allclose(grad, fd, atol=1e-6)


def test_expected_cost_of_a_gated_model_is_exact():
    """E[cost] under independent labels, gated terms included, and its gradient, against enumeration."""
    choices = SearchSpaceChoices({"op0": Categorical(("a", "b")), "op1": Categorical(("a", "b")), "in": Subset(2, 1)})
    additive = AdditiveCost(1.0, {"op0": {"a": 0.0, "b": 0.0}, "op1": {"a": 0.0, "b": 0.0}, "in": {(0,): 0.5, (1,): 0}})
    terms = (GatedTerm("in", 0, "op0", {"a": 2.0, "b": 5.0}), GatedTerm("in", 1, "op1", {"a": 1.0, "b": 3.0}))
    model = GatedCost(additive, terms, {"in": ((0,), (1,))})
    probs = [np.array([0.3, 0.7]), np.array([0.6, 0.4]), np.array([0.2, 0.8])]
    archs = itertools.product(*(c.values for c in choices.values()))
    total = sum(
        np.prod([probs[k][i] for k, i in enumerate(idx)]) * model.cost(dict(zip(choices, vals)))
        for idx, vals in zip(itertools.product(range(2), repeat=3), archs)
    )
    got, grads = expected_cost(probs, model, choices, value_costs(choices, model)[1])
    assert got == pytest.approx(total)
    for k in range(3):  # linear in each label's probabilities: the gradient is the cost given that value
        for v in range(2):
            moved = [p.copy() for p in probs]
            moved[k] = np.eye(2)[v]
            assert expected_cost(moved, model, choices, [])[0] - got == pytest.approx(grads[k] @ (moved[k] - probs[k]))


def test_generator_file_round_trip_and_damage(tmp_path):
    params = GeneratorParams(steps=5)
    a = ArchitectureGeneratorSearch(params).search(CHOICES, accuracy, Budget("flops", None, additive=FLOPS),
                                                   np.random.default_rng(0))  # fmt: skip
    b = ArchitectureGeneratorSearch(params).search(CHOICES, accuracy, Budget("flops", None, additive=FLOPS),
                                                   np.random.default_rng(0))  # fmt: skip
    assert a.artifacts["generator.npz"] == b.artifacts["generator.npz"]  # byte-identical, no timestamps
    generator = load(a, tmp_path)
    assert generator.choices == CHOICES and generator.cost_model == FLOPS and generator.info["steps"] == 5
    again = TrainedGenerator.load(str(tmp_path / "generator.npz"))
    for t in TARGETS:
        np.testing.assert_array_equal(
            np.concatenate(again.probabilities(t)), np.concatenate(generator.probabilities(t))
        )
    good = a.artifacts["generator.npz"]
    cases = {
        "junk": b"not a zip file",
        "truncated": good[: len(good) // 2],
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / f"{name}.npz").write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable generator file") as info:
            TrainedGenerator.load(str(tmp_path / f"{name}.npz"))
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="no such generator file"):
        TrainedGenerator.load(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "foreign.npz", w1=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a readable generator file"):
        TrainedGenerator.load(str(tmp_path / "foreign.npz"))
    wrong = dict(generator.net.arrays, w2=np.zeros((3, generator.net.hidden)))
    (tmp_path / "shape.npz").write_bytes(
        TrainedGenerator(CHOICES, "flops", FLOPS, (LOW, HIGH), generator.net).to_bytes()
    )
    with np.load(tmp_path / "shape.npz") as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tmp_path / "shape.npz", **{**arrays, "w2": wrong["w2"]})
    with pytest.raises(CheckpointError, match=r"damaged generator weights \(w2 has shape"):
        TrainedGenerator.load(str(tmp_path / "shape.npz"))


def test_killed_search_resumes_through_the_journal_to_the_same_generator(tmp_path):
    budget = Budget("flops", LOW + 0.7 * (HIGH - LOW), additive=FLOPS)
    params = GeneratorParams(steps=20)
    reference = ArchitectureGeneratorSearch(params).search(CHOICES, accuracy, budget, np.random.default_rng(4))
    path = str(tmp_path / "journal.jsonl")
    calls = {"n": 0}

    def dies_after_30(arch):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        return accuracy(arch)

    journal = SearchJournal(path, {"run": 1})
    journal.open(resume=False)
    with pytest.raises(KeyboardInterrupt):
        ArchitectureGeneratorSearch(params).search(CHOICES, journal.wrap(dies_after_30), budget,
                                                   np.random.default_rng(4))  # fmt: skip
    resumed = SearchJournal(path, {"run": 1})
    resumed.open(resume=True)
    result = ArchitectureGeneratorSearch(params).search(CHOICES, resumed.wrap(accuracy), budget,
                                                        np.random.default_rng(4))  # fmt: skip
    assert resumed.replayed == 30
    assert result.to_dict() == reference.to_dict()
    assert result.artifacts["generator.npz"] == reference.artifacts["generator.npz"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"targets": 1}, "targets"),
        ({"samples": 1}, "samples"),
        ({"hidden": 0}, "hidden"),
        ({"over_penalty": 0.5}, "over_penalty"),
        ({"tolerance": 1.5}, "tolerance"),
        ({"cost_weight": -1.0}, "cost_weight"),
    ],
)
def test_bad_params(params, field):
    with pytest.raises(ConfigError, match=f"^search_strategy.{field}: must be"):
        ArchitectureGeneratorSearch(GeneratorParams(**params))


def test_needs_a_cost():
    with pytest.raises(ConfigError, match="needs a cost"):
        ArchitectureGeneratorSearch().search(CHOICES, accuracy, Budget.unconstrained(), np.random.default_rng(0))


# --- the generate agent on a tiny real run ---------------------------------------------------------------------

CONFIG = "configs/proxylessnas_uniform_generator.yml"
TINY = [
    "search_strategy.steps=6",
    "search_strategy.targets=2",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "train.max_steps_per_epoch=3",
    "search.valid_batches=1",
    "search.bn_recalibration_batches=1",
    "search.retrain=false",
]
GENERATE = ["agent.main_agent=generate"]


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    assert main.main(["-c", CONFIG, "--title", "search", "--output-dir", str(out), "--quiet", *TINY]) == 0
    return out / "search"


def generate(run, out, title, *overrides):
    args = ["-c", CONFIG, "--title", title, "--output-dir", str(out), "--quiet", *GENERATE,
            f"generate.generator_path={run / 'generator.npz'}", *overrides]  # fmt: skip
    return main.main(args)


def test_search_run_writes_a_generator(generator_run):
    generator = TrainedGenerator.load(str(generator_run / "generator.npz"))
    history = json.loads((generator_run / "search_history.json").read_text())
    assert generator.metric == "flops" and generator.trained_range[1] == 2_000_000
    assert generator.info["evaluations"] == history["evaluations"] - 1  # + the generator's own pick at the end
    assert all(h["cost"] <= 2_000_000 for h in history["history"])


def test_generate_agent_answers_two_budgets_without_a_search(generator_run, tmp_path):
    archs = {}
    for target in (800_000, 1_600_000):
        assert generate(generator_run, tmp_path, f"t{target}", f"hardware.target_hc={target}") == 0
        run = tmp_path / f"t{target}"
        searched = json.loads((run / "searched_arch.json").read_text())
        assert searched["flops"] <= target and searched["target_hc"] == target
        assert searched["generator_path"] == str(generator_run / "generator.npz")
        assert not (run / "checkpoints").exists() and not (run / "search_history.json").exists()  # no search ran
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["arch"] == searched["arch"] and "test_accuracy" not in metrics
        archs[target] = searched
    # the run's own lookup table was reused, not rewritten
    assert json.loads((generator_run / "lookup_table.json").read_text())["fingerprint"]


def test_generate_agent_retrains(generator_run, tmp_path):
    extra = ["hardware.target_hc=1000000", "generate.retrain=true", "retrain.epochs=1", "retrain.max_steps_per_epoch=2",
             "evaluate.export_nnp=false"]  # fmt: skip
    assert generate(generator_run, tmp_path, "re", *extra) == 0
    metrics = json.loads((tmp_path / "re" / "metrics.json").read_text())
    assert metrics["flops"] <= 1_000_000 and "test_accuracy" in metrics


@pytest.mark.parametrize(
    "case, overrides, message",
    [
        ("junk", [], "generate.generator_path: .*: not a readable generator file"),
        ("metric", ["hardware.info_metric=params", "hardware.target_hc=50000"], "generates for flops budgets"),
        ("space", ["search_space.kernels=[3, 5]"], "trained on another search space"),
        ("costs", ["search_space.last_channels=64"], "hardware.lookup_table: .* was built for another setting"),
        ("table", ["search_space.last_channels=64"], "trained on other flops costs than this run's lookup table"),
        ("budget", ["hardware.target_hc=1000"], "hardware.target_hc: 1000 is below the cheapest"),
        ("missing", ["generate.generator_path=null"], "generate.generator_path: required"),
        ("no_target", ["hardware.target_hc=null"], "hardware.target_hc: required"),
    ],
)
def test_generate_agent_refuses_with_one_line_and_writes_nothing(generator_run, tmp_path, capsys, case, overrides,
                                                                  message):  # fmt: skip
    run = generator_run
    if case == "junk":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "generator.npz").write_bytes(b"\x00" * 100)
        run = tmp_path / "bad"
    if case == "table":  # a table of its own (not the search run's): the costs themselves are compared
        overrides = [*overrides, f"hardware.lookup_table={tmp_path / 'table.json'}"]
    capsys.readouterr()
    code = generate(run, tmp_path / "out", "g", "hardware.target_hc=1200000", *overrides)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not os.path.exists(tmp_path / "out" / "g")
