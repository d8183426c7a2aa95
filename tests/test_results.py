"""make results: the quick variant runs every kind of entry, renders the page from the runs, and resumes."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def results(runs, out):
    cmd = [sys.executable, "-m", "tools.results", "--quick", "--runs", str(runs), "--out", str(out), "--jobs", "2"]
    return subprocess.run(cmd + ["--no-progress"], cwd=ROOT, capture_output=True, text=True, check=False)


def read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    runs = tmp_path_factory.mktemp("results")
    out = runs / "page" / "RESULTS.md"
    done = results(runs, out)
    assert done.returncode == 0, done.stdout + done.stderr
    return runs, out, out.read_text(encoding="utf-8")


def test_the_page_reports_what_the_runs_measured(page):
    runs, out, text = page
    ranking = read(runs / "rank_quality" / "rank_quality.json")
    tau = ranking["statistics"]["kendall_tau"]
    assert (f"| {tau:.3f} |" if tau is not None else "| undefined |") in text
    for a in ranking["architectures"]:
        assert f"| {a['supernet_accuracy']:.4f} | {a['standalone_accuracy']:.4f} |" in text
    assert (out.parent / "RESULTS_rank_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baseline = read(runs / "demo" / "metrics.json")["random_baseline"]
    assert len(baseline["accuracies"]) == 2
    assert f"| {baseline['found']:.4f} | {baseline['mean']:.4f} ± {baseline['std']:.4f} |" in text
    seeds = [read(runs / name / "metrics.json")["test_accuracy"] for name in ("demo", "demo_seed1")]
    for acc in seeds:
        assert f"| {acc:.4f} |" in text
    assert "2 distinct" in text or "1 distinct" in text
    assert "Not in this page" not in text and "Quick variant" in text


def test_a_rerun_reuses_finished_runs_and_resumes_an_unfinished_one(page):
    runs, out, text = page
    before = read(runs / "demo" / "metrics.json")
    os.remove(runs / "demo" / "metrics.json")  # as if killed after the retrain's last checkpoint
    done = results(runs, out)
    assert done.returncode == 0, done.stdout + done.stderr
    after = read(runs / "demo" / "metrics.json")
    drop = ("seconds",)
    assert {k: v for k, v in after.items() if k not in drop} == {k: v for k, v in before.items() if k not in drop}
    assert (runs / "demo.log").read_text(encoding="utf-8").count("$ main.py --resume") == 1
    assert "$ main.py" not in (runs / "demo_seed1.log").read_text(encoding="utf-8").split("\n", 1)[1]
    timed = lambda page: [line for line in page.splitlines() if not line.startswith("| `demo` |")]  # noqa: E731
    assert timed(out.read_text(encoding="utf-8")) == timed(text)  # only the resumed run's minutes differ
