"""The collapse guard of differentiable search (DARTS+ early stopping): the detector's counts and its firing epoch
on synthetic alpha histories, parameter-free candidates found from the modules of real supernets, a DARTS run
whose alphas are forced to skip connections stopping early and still searching, and resumes that end as
uninterrupted runs do (after the stop, and in the middle of a run whose guard has already warned)."""

import logging
import math
import os

import numpy as np
import pytest
from test_search_space import small_params

from core.config import OptimizerConfig, TrainConfig, build_config
from core.errors import ConfigError
from core.registries import AGENTS, CRITERIA, DATASETS, SEARCH_SPACES, TRAINING_STRATEGIES
from core.run_logging import LOGGER_NAME, Monitor, setup_logger
from core.run_state import read_checkpoint
from core.seed import make_rng, seed_nnabla
from search_space.spec import DataInfo
from training_strategy.collapse import CollapseDetector, LabelCandidates
from training_strategy.differentiable import (
    ArchOptimizerConfig,
    CollapseGuardConfig,
    DifferentiableParams,
    candidate_kinds,
)
from training_strategy.loop import RunIO, TrainLoop

OPS = ("zero", "skip", "pool", "conv3", "conv5")
EDGE = LabelCandidates(OPS, (True, True, True, False, False), (True, False, False, False, False))
CANDIDATES = {
    **{label: EDGE for label in "abcd"},
    "free_only": LabelCandidates(("skip", "pool"), (True, True), (False, False)),  # nothing to choose from
    "parametric": LabelCandidates(("conv3", "conv5"), (False, False), (False, False)),
}
UNIFORM = [0.2] * 5


def alphas(**probs):
    """One epoch's alphas: log-probabilities (softmax gives ``probs`` back), uniform for labels not given."""
    return {label: np.log(probs.get(label, UNIFORM)) for label in CANDIDATES}


def free_mass(p):
    """Hand count: skip + pool over everything but zero."""
    return (p[1] + p[2]) / (1 - p[0])


class Recorder(logging.Handler):
    """Keeps the formatted lines of a logger."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


class ScalarMonitor(Monitor):
    """A monitor that keeps the ``collapse/*`` scalars instead of writing TensorBoard files."""

    def __init__(self):
        super().__init__(None)
        self.collapse = []

    def scalars(self, prefix, values, step):
        if prefix == "collapse":
            self.collapse.append((step, dict(values)))


def test_detector_fires_on_an_all_skip_history_at_the_epoch_the_count_reaches_the_limit():
    a2, a3 = [0.1, 0.4, 0.1, 0.2, 0.2], [0.05, 0.6, 0.05, 0.15, 0.15]
    b3 = [0.5, 0.2, 0.1, 0.1, 0.1]  # Zero is the most probable, but excluded: skip dominates
    c4, d4 = [0.1, 0.1, 0.5, 0.2, 0.1], [0.1, 0.5, 0.1, 0.2, 0.1]
    history = [alphas(), alphas(a=a2), alphas(a=a3, b=b3), alphas(a=a3, b=b3, c=c4, d=d4)]
    detector = CollapseDetector(CANDIDATES, max_parameter_free=2)
    assert detector.watched == ["a", "b", "c", "d"]  # labels without both kinds of candidates are not watched
    reports = detector.reports(history)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert [r.count for r in reports] == [0, 1, 2, 4]  # uniform alphas are a tie: nothing dominates
    assert [r.collapsed for r in reports] == [False, False, True, True]
    assert [r.rose for r in reports] == [False, False, True, False]  # warned once, when the count reached 2
    assert reports[2].dominant == {"a": "skip", "b": "skip"}
    assert reports[3].dominant == {"a": "skip", "b": "skip", "c": "pool", "d": "skip"}
    half = 0.5  # uniform: (0.2 + 0.2) / 0.8
    expected = [half, (free_mass(a2) + 3 * half) / 4, (free_mass(a3) + free_mass(b3) + 2 * half) / 4]
    expected.append((free_mass(a3) + free_mass(b3) + free_mass(c4) + free_mass(d4)) / 4)
    assert [r.mass for r in reports] == pytest.approx(expected, rel=1e-6)
    assert [r.collapsed for r in CollapseDetector(CANDIDATES, 1).reports(history)] == [False, True, True, True]
    assert not any(r.collapsed for r in CollapseDetector(CANDIDATES, 5).reports(history))


def test_detector_stays_quiet_on_a_healthy_history():
    a = [0.1, 0.2, 0.1, 0.4, 0.2]  # a convolution leads
    b = [0.5, 0.1, 0.1, 0.2, 0.1]  # Zero leads; the next one is a convolution
    c = [0.1, 0.3, 0.1, 0.2, 0.3]  # skip and conv5 tie: no dominance
    d = [0.1, 0.4, 0.1, 0.2, 0.2]  # one skip-dominated label: below the limit
    history = [alphas(), alphas(a=a, b=b, c=c, d=d), alphas(a=a, b=b, c=c, d=a)]
    reports = CollapseDetector(CANDIDATES).reports(history)
    assert [r.count for r in reports] == [0, 1, 0]
    assert reports[1].dominant == {"d": "skip"}
    assert not any(r.collapsed or r.rose for r in reports)
    assert reports[2].mass == pytest.approx((free_mass(a) * 2 + free_mass(b) + free_mass(c)) / 4, rel=1e-6)


def test_detector_watches_only_the_labels_its_patterns_name():
    detector = CollapseDetector(CANDIDATES, labels=("a", "[cd]"))
    assert detector.watched == ["a", "c", "d"]
    history = [alphas(b=[0.1, 0.5, 0.1, 0.2, 0.1], c=[0.1, 0.5, 0.1, 0.2, 0.1])]
    assert detector.reports(history)[0].dominant == {"c": "skip"}  # b is skip-dominated, but not watched
    with pytest.raises(ValueError, match="'normal_\\*' matches no label with candidate operations"):
        CollapseDetector(CANDIDATES, labels=("normal_*",))
    with pytest.raises(ValueError, match="3 alphas for the 5 candidates"):
        detector.reports([{**alphas(), "a": np.zeros(3)}])


def test_parameter_free_candidates_are_found_from_the_modules_of_real_supernets(proxyless, tiny_params):
    def kinds(space, params):
        net = space.build_supernet(params, DataInfo(10, 1, 8))
        found = candidate_kinds(net)
        free = {
            k: {n for n, f, z in zip(c.names, c.parameter_free, c.excluded) if f and not z} for k, c in found.items()
        }
        return free, {k: {n for n, z in zip(c.names, c.excluded) if z} for k, c in found.items()}

    free, excluded = kinds(SEARCH_SPACES.get("DARTS"), small_params(SEARCH_SPACES.get("DARTS")))
    pools = {"max_pool_3x3", "avg_pool_3x3"}
    strided = {"reduce_n0_e0", "reduce_n0_e1", "reduce_n1_e0", "reduce_n1_e1"}  # a skip from a cell input reduces
    edges = [f"{cell}_n{n}_e{e}" for cell in ("normal", "reduce") for n, e in ((0, 0), (0, 1), (1, 0), (1, 1), (1, 2))]
    assert sorted(free) == sorted(edges)
    assert free == {k: pools if k in strided else pools | {"skip_connect"} for k in free}
    assert excluded == {k: {"zero"} for k in free}
    free, excluded = kinds(SEARCH_SPACES.get("ENASMicro"), small_params(SEARCH_SPACES.get("ENASMicro")))
    assert len(free) == 8 and all(v == {"avg_pool_3x3", "max_pool_3x3", "identity"} for v in free.values())
    assert not any(excluded.values())
    free, _ = kinds(SEARCH_SPACES.get("ENASMacro"), small_params(SEARCH_SPACES.get("ENASMacro")))
    assert len(free) == 6 and not any(free.values())  # its pooling branches start with a 1x1 convolution
    free, _ = kinds(proxyless, tiny_params)
    assert free == {f"layer_{i}": set() if i == 2 else {"skip"} for i in range(6)}  # no skip where channels change


def darts_config(**guard):
    return build_config(
        {
            "agent": {
                "search_space_agent": "DARTS",
                "training_strategy_agent": "differentiable",
                "search_strategy_agent": "differentiable",
            },
            "search_space": {"init_channels": 4, "layers": 3, "nodes": 2},
            "training_strategy": {"arch_optimizer": {"lr": 1.0e-6}, "collapse_guard": guard},
            "train": {"epochs": 3, "batch_size": 16, "max_steps_per_epoch": 2},
            "search": {"valid_batches": 1, "eval_batch_size": 64, "retrain": False},
        }
    ).validate()


def recorded(logger):
    """Attach a Recorder to ``logger`` for one test; yields its lines."""
    recorder = Recorder()
    logger.addHandler(recorder)
    yield recorder.lines
    logger.removeHandler(recorder)


@pytest.fixture
def log():
    """The lines of the toolkit's run log."""
    setup_logger(verbose=False)
    yield from recorded(logging.getLogger(LOGGER_NAME))


@pytest.fixture
def test_log():
    """A logger of its own for loops built in the test, and its lines."""
    logger = logging.getLogger("test_collapse_guard")
    logger.setLevel(logging.INFO)
    for lines in recorded(logger):
        yield logger, lines


def test_a_darts_run_forced_to_skips_stops_early_searches_and_resumes_to_the_same_search(tmp_path, log):
    cfg = darts_config(action="stop", labels=["normal_*"])
    agent = AGENTS.get("search")(cfg, str(tmp_path), progress=False)
    choices = agent.supernet.choices()
    normal_edges = [k for k in choices if k.startswith("normal_") and "_e" in k]
    for label in normal_edges:  # every normal edge starts (and, at a tiny alpha lr, stays) skip-dominated
        alpha = agent.supernet.arch_parameters()[label]
        alpha.d = np.where(np.array(choices[label].values) == "skip_connect", 3.0, 0.0)
    os.makedirs(tmp_path, exist_ok=True)
    agent.train_supernet()
    assert agent.loop.epoch == 1 and agent.loop.stopped and len(agent.loop.history) == 1  # of 3 epochs
    warnings = [m for level, m in log if level == "WARNING" and m.startswith("collapse guard")]
    assert len(warnings) == 1 and "after epoch 1, 5 of 5 watched labels" in warnings[0]
    assert all(f"{label} skip_connect" in warnings[0] for label in normal_edges) and "DARTS+" in warnings[0]
    assert ("INFO", "[supernet] the training strategy stopped training after epoch 1 of 3") in log
    ckpt = read_checkpoint(str(tmp_path / "checkpoints"), "supernet")
    assert ckpt.epoch == 1 and ckpt.state["stopped"] is True
    assert ckpt.state["policy"]["alpha_history"]["epochs"] == 1
    assert sorted(ckpt.state["policy"]["alpha_history"]["alphas"]) == sorted(normal_edges)
    result = agent.search()
    assert result.evaluations == 1 and all(result.best_arch[k] == "skip_connect" for k in normal_edges)
    assert math.isfinite(result.best_metrics["accuracy"])

    os.remove(tmp_path / "checkpoints" / "search_journal.jsonl")  # the resumed search evaluates afresh
    log.clear()
    resumed = AGENTS.get("search")(cfg, str(tmp_path), progress=False, resume=True)
    assert resumed.loop.epoch == 1 and resumed.loop.stopped
    resumed.train_supernet()  # trains nothing: the stop is part of the checkpoint
    assert resumed.loop.history == agent.loop.history and resumed.loop.global_step == agent.loop.global_step
    assert ("INFO", "[supernet] the training strategy stopped training after epoch 1: nothing to train") in log
    assert not [m for level, m in log if level == "WARNING"]
    assert len(resumed.policy.alpha_history) == 1
    for label in normal_edges:
        np.testing.assert_array_equal(resumed.policy.alpha_history[0][label], agent.policy.alpha_history[0][label])
    again = resumed.search()
    assert again.best_arch == result.best_arch and again.best_metrics == result.best_metrics


def test_bad_collapse_guard_values_are_one_line_config_errors(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^training_strategy.collapse_guard.max_parameter_free: must be >= 1, got 0$"
    ):
        darts_config(max_parameter_free=0)
    with pytest.raises(ConfigError, match=r"^training_strategy.collapse_guard.action: invalid value 'halt'"):
        darts_config(action="halt")
    cfg = darts_config(labels=["cell_*"])
    with pytest.raises(ConfigError, match=r"^training_strategy.collapse_guard.labels: 'cell_\*' matches no label"):
        AGENTS.get("search")(cfg, str(tmp_path / "refused"), progress=False)
    assert not os.path.exists(tmp_path / "refused")


def proxyless_loop(proxyless, tiny_params, directory, monitor, logger, checkpoint_every=1):
    """A three-epoch DARTS loop (one step each) on the tiny ProxylessNAS space, its first two layers skip-dominated."""
    seed_nnabla(make_rng(0))
    ds = DATASETS.get("synthetic")
    data = ds(ds.Params(num_classes=4, channels=1, input_size=8, samples=400)).load()
    supernet = proxyless.build_supernet(tiny_params, DataInfo(4, 1, 8))
    guard = CollapseGuardConfig(max_parameter_free=2, action="warn")
    params = DifferentiableParams(arch_optimizer=ArchOptimizerConfig(lr=1e-2), collapse_guard=guard)
    policy = TRAINING_STRATEGIES.get("differentiable")(params)
    weights, arch = policy.split_train(data.train, make_rng(0))
    cfg = TrainConfig(
        epochs=3, batch_size=8, max_steps_per_epoch=1, checkpoint_every=checkpoint_every, optimizer=OptimizerConfig()
    )
    io = RunIO(logger, monitor, directory and str(directory), progress=False)
    ce = CRITERIA.get("cross_entropy")(CRITERIA.get("cross_entropy").Params())
    loop = TrainLoop(
        supernet, ce, weights, cfg, policy, make_rng(0), io, "supernet", strategy_context={"arch_data": arch}
    )
    for label in ("layer_0", "layer_1"):
        names = supernet.choices()[label].values
        supernet.arch_parameters()[label].d = np.where(np.array(names) == "skip", 4.0, 0.0)
    return loop


class KilledError(Exception):
    """Stands in for a kill between two epochs."""


def test_a_run_resumed_after_the_guard_warned_reports_as_the_uninterrupted_one(
    proxyless, tiny_params, tmp_path, test_log
):
    logger, lines = test_log
    reference = proxyless_loop(proxyless, tiny_params, None, ScalarMonitor(), logger)
    reference.run()
    warned = [m for _, m in lines if m.startswith("collapse guard")]
    assert len(warned) == 1 and "after epoch 1, 2 of 5 watched labels" in warned[0]  # once, though it stays
    assert "layer_0 skip, layer_1 skip" in warned[0] and "training goes on (action: warn)" in warned[0]
    assert not reference.stopped and reference.epoch == 3
    scalars = reference.context.monitor.collapse
    assert [step for step, _ in scalars] == [1, 2, 3]
    assert [v["parameter_free_dominant"] for _, v in scalars] == [2, 2, 2]
    start = (2 * np.exp(4) / (np.exp(4) + 6) + 3 / 7) / 5  # the forced alphas' mass (at a small alpha lr)
    assert all(v["parameter_free_mass"] == pytest.approx(start, abs=0.01) for _, v in scalars)

    interrupted = proxyless_loop(proxyless, tiny_params, tmp_path, ScalarMonitor(), logger, checkpoint_every=2)
    end_epoch = interrupted.policy.end_epoch

    def killed_at_third(supernet, epoch):
        if epoch == 3:
            raise KilledError
        return end_epoch(supernet, epoch)

    interrupted.policy.end_epoch = killed_at_third
    with pytest.raises(KilledError):
        interrupted.run()
    lines.clear()
    resumed = proxyless_loop(proxyless, tiny_params, tmp_path, ScalarMonitor(), logger)
    resumed.load_checkpoint(str(tmp_path))
    assert resumed.epoch == 2 and len(resumed.policy.alpha_history) == 2
    resumed.run()
    assert not [m for _, m in lines if m.startswith("collapse guard")]  # it had warned before the kill
    assert [step for step, _ in resumed.context.monitor.collapse] == [3]
    third = resumed.context.monitor.collapse[0][1]
    assert third["parameter_free_dominant"] == 2
    assert third["parameter_free_mass"] == pytest.approx(scalars[2][1]["parameter_free_mass"], abs=1e-6)
    assert len(resumed.policy.alpha_history) == 3
    for ours, theirs in zip(resumed.policy.alpha_history, reference.policy.alpha_history):
        assert sorted(ours) == ["layer_0", "layer_1", "layer_3", "layer_4", "layer_5"]
        for label in ours:
            np.testing.assert_allclose(ours[label], theirs[label], rtol=0, atol=1e-6, err_msg=label)
