"""main_agent: rank_quality and search.random_baseline on configs/smoke.yml-sized runs: consistent reports, runs
interrupted mid-list that resume to the uninterrupted result, and one-line refusals that write nothing."""

import json
import math
import shutil

import numpy as np
import pytest

import main
from core.config import load_config
from core.ranking import kendall_tau, spearman, top_k_overlap
from core.registries import AGENTS
from core.run_logging import setup_logger
from training_strategy.loop import TrainLoop

SMOKE = "configs/smoke.yml"
TINY_RETRAIN = ["retrain.epochs=2", "retrain.max_steps_per_epoch=2", "--quiet"]
RANK_AGENT = ["agent.main_agent=rank_quality"]
RANK = [*RANK_AGENT, "rank_quality.archs=3", "rank_quality.top_k=2", *TINY_RETRAIN]
BASELINE = ["search.random_baseline=2", *TINY_RETRAIN]


class SimulatedKillError(Exception):
    """Stands in for a kill: raised from inside a training step, not caught by main."""


def run(out, title, extra, interrupt_tag=None, monkeypatch=None):
    """main.main on the smoke config; with ``interrupt_tag`` the run stops in that loop's second epoch."""
    argv = ["-c", SMOKE, "--title", title, "--output-dir", str(out), *extra]
    if interrupt_tag is None:
        assert main.main(argv) == 0
        return out / title
    real = TrainLoop.train_step

    def step(self):
        if self.tag == interrupt_tag and self.epoch == 1:
            raise SimulatedKillError(self.tag)
        return real(self)

    with monkeypatch.context() as m:
        m.setattr(TrainLoop, "train_step", step)
        with pytest.raises(SimulatedKillError):
            main.main(argv)
    return out / title


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted rank_quality and random-baseline runs, and each interrupted in its list's 2nd architecture
    (after that architecture's first epoch was checkpointed) and then resumed."""
    out = tmp_path_factory.mktemp("rank")
    monkeypatch = pytest.MonkeyPatch()
    dirs = {"rank": run(out, "rank", RANK), "baseline": run(out, "baseline", BASELINE)}
    interrupted = {"rank_resumed": (RANK, "rank_quality_1"), "baseline_resumed": (BASELINE, "random_baseline_1")}
    for name, (extra, tag) in interrupted.items():
        dirs[name] = run(out, name, extra, interrupt_tag=tag, monkeypatch=monkeypatch)
        assert not (dirs[name] / "metrics.json").exists()
        assert main.main(["--resume", str(dirs[name]), "--quiet"]) == 0
    return dirs


@pytest.mark.slow
def test_rank_quality_report_is_consistent(runs):
    run_dir = runs["rank"]
    report, metrics = read(run_dir, "rank_quality.json"), read(run_dir, "metrics.json")
    archs = report["architectures"]
    assert [a["index"] for a in archs] == [0, 1, 2]
    assert len({json.dumps(a["arch"], sort_keys=True) for a in archs}) == 3  # distinct
    low, high = report["settings"]["cost_range"]
    costs = [a["cost"] for a in archs]
    assert costs == sorted(costs) and len(set(costs)) == 3 and low <= costs[0] and costs[-1] <= high
    assert [a["level"] for a in archs] == pytest.approx([low, (low + high) / 2, high])
    half = (high - low) / 4  # each within half a level spacing of its level
    assert all(abs(a["cost"] - a["level"]) <= half + 1e-6 for a in archs)
    scores = [a["supernet_accuracy"] for a in archs]
    accuracies = [a["standalone_accuracy"] for a in archs]
    stats = report["statistics"]
    for key, fn in (("kendall_tau", kendall_tau), ("spearman", spearman)):
        expected = fn(scores, accuracies)
        assert stats[key] is None if math.isnan(expected) else stats[key] == pytest.approx(expected)
    assert stats["top_k_overlap"] == pytest.approx(top_k_overlap(scores, accuracies, 2))
    assert stats["top_k"] == 2 and stats["archs"] == 3
    assert metrics["agent"] == "rank_quality" and metrics["rank_quality"] == stats
    assert (run_dir / "rank_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = read(run_dir / "checkpoints", "rank_quality_retrained.json")["results"]
    assert [r["test_accuracy"] for r in recorded] == accuracies
    assert [r["arch"] for r in recorded] == [a["arch"] for a in archs]
    log = (run_dir / "log.txt").read_text()
    assert "[rank_quality] architecture 3 of 3" in log and "rank quality over 3 architectures" in log
    assert not (run_dir / "model.nnp").exists()  # the ranked architectures are not exported


@pytest.mark.slow
def test_interrupted_rank_quality_resumes_to_the_uninterrupted_result(runs):
    resumed = runs["rank_resumed"]
    assert read(resumed, "rank_quality.json") == read(runs["rank"], "rank_quality.json")
    assert read(resumed, "metrics.json")["rank_quality"] == read(runs["rank"], "metrics.json")["rank_quality"]
    log = (resumed / "log.txt").read_text()
    assert "[supernet] resumed after epoch 1" in log
    assert "[rank_quality] 1 of 3 retrains recorded; continuing" in log
    assert "[rank_quality_1] resumed after epoch 1" in log  # the interrupted architecture continued, not restarted


@pytest.mark.slow
def test_random_baseline_reports_its_accuracies(runs):
    metrics = read(runs["baseline"], "metrics.json")
    baseline = metrics["random_baseline"]
    accuracies = baseline["accuracies"]
    assert len(accuracies) == 2 and len(baseline["archs"]) == 2 and baseline["archs"][0] != baseline["archs"][1]
    assert baseline["mean"] == pytest.approx(np.mean(accuracies))
    assert baseline["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert baseline["found"] == metrics["test_accuracy"]
    assert baseline["delta"] == pytest.approx(metrics["test_accuracy"] - baseline["mean"])
    log = (runs["baseline"] / "log.txt").read_text()
    found, mean, std = (100 * baseline[k] for k in ("found", "mean", "std"))
    assert f"search {found:.2f} % vs random {mean:.2f} ± {std:.2f} % over 2" in log
    assert (runs["baseline"] / "model.nnp").exists()  # the found architecture's export, not a baseline's


@pytest.mark.slow
def test_interrupted_random_baseline_resumes_to_the_uninterrupted_result(runs):
    resumed, reference = read(runs["baseline_resumed"], "metrics.json"), read(runs["baseline"], "metrics.json")
    assert resumed["random_baseline"] == reference["random_baseline"]
    assert resumed["arch"] == reference["arch"] and resumed["test_accuracy"] == reference["test_accuracy"]
    log = (runs["baseline_resumed"] / "log.txt").read_text()
    assert "[retrain] resumed after epoch 2" in log  # the found architecture is not retrained again
    assert "[random_baseline] 1 of 2 retrains recorded; continuing" in log
    assert "[random_baseline_1] resumed after epoch 1" in log


def test_a_damaged_record_refuses_the_resume_and_changes_nothing(runs, tmp_path, capsys):
    run_dir = tmp_path / "damaged"
    shutil.copytree(runs["rank"], run_dir)
    record = run_dir / "checkpoints" / "rank_quality_retrained.json"
    record.write_text(record.read_text()[:-40])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main.main(["--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {record}: damaged retrain record"), err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def cheapest(runs):
    return read(runs["rank"], "rank_quality.json")["settings"]["cost_range"][0]


@pytest.mark.parametrize(
    "extra, key",
    [
        ([*RANK_AGENT, "rank_quality.archs=1"], "rank_quality.archs: must be >= 2, got 1"),
        ([*RANK_AGENT, "rank_quality.archs=3", "rank_quality.top_k=4"], "rank_quality.top_k: must be at most"),
        ([*RANK_AGENT, "rank_quality.archs=3", "hardware.target_hc=CHEAPEST"], "rank_quality.archs: 3 distinct"),
        (["search.random_baseline=1"], "search.random_baseline: 1 architecture has no spread"),
        (["search.random_baseline=2", "search.retrain=false"], "search.random_baseline: needs search.retrain"),
        (["search.random_baseline=3", "hardware.target_hc=CHEAPEST"], "search.random_baseline: 3 distinct"),
    ],
)
def test_refusals_are_one_line_and_create_no_run_directory(runs, tmp_path, capsys, extra, key):
    extra = [e.replace("CHEAPEST", f"{cheapest(runs):.0f}") for e in extra]
    capsys.readouterr()
    code = main.main(["-c", SMOKE, "--title", "refused", "--output-dir", str(tmp_path / "out"), "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {key}"), err
    assert not (tmp_path / "out").exists()


def test_the_rank_quality_config_builds_twelve_spread_architectures(tmp_path):
    setup_logger(verbose=False)
    config = load_config("configs/proxylessnas_rank_quality.yml")
    demo = load_config("configs/demo.yml")
    for section in ("search_space", "dataset", "hardware"):  # it ranks the demo's space under the demo's budget
        assert getattr(config, section) == getattr(demo, section), section
    agent = AGENTS.get(config.agent.main_agent)(config, str(tmp_path / "run"), progress=False)
    model = agent.budget.additive
    costs = [model.cost(a) for a in agent.archs]
    assert len(agent.archs) == 12 and len({json.dumps(a, sort_keys=True) for a in agent.archs}) == 12
    assert agent.levels[0] == model.min_cost() and agent.levels[-1] == config.hardware.target_hc
    half = (agent.levels[1] - agent.levels[0]) / 2
    assert costs == sorted(costs) and all(abs(c - level) <= half + 1e-6 for c, level in zip(costs, agent.levels))
    assert max(costs) <= config.hardware.target_hc
    assert not (tmp_path / "run").exists()  # construction writes nothing
