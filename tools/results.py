"""Regenerate docs/RESULTS.md: every shipped digits config run end to end, the supernet's ranking quality,
search against random architectures under the same budget, and the spread over seeds.

    python -m tools.results [--quick] [--out FILE] [--runs DIR] [--jobs N]
    make results                      # the whole page (hours on 2 CPU cores; resumable)
    RESULTS_QUICK=1 make results      # the reduced variant: smoke-sized runs, under a minute

Every entry is one ``main.py`` run in ``--runs`` (default ``runs/results``, quick: ``runs/results_quick``), named
after its entry. Rerunning resumes: a finished run (its ``metrics.json``) is reused, an interrupted one is
continued with ``main.py --resume``, so a killed ``make results`` loses at most the work since each run's last
checkpoint. Each run's output goes to ``<runs>/<entry>.log``; a failed run is reported with the last line of its
log and the page says so, and the exit code is 1. The quick variant writes ``<runs>/RESULTS.md`` unless ``--out``
is given, so it never replaces the full page.
"""

import argparse
import concurrent.futures
import dataclasses
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import jinja2
import yaml
from tqdm import tqdm

from core.config import load_config
from core.ranking import bootstrap_interval
from core.registries import DATASETS, SEARCH_SPACES
from hardware.measure import MeasureSettings, environment, measure_module
from search_space.choices import decode_arch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "tools", "RESULTS.md.j2")
#: configs that are not a digits search of their own: the smoke run, the ranking report, CIFAR
NOT_SEARCH_ENTRIES = ("smoke.yml",)
#: the demo is run with these extra seeds (seed 0 is its own entry) for the reproducibility report
SEEDS = (1, 2)
#: random in-budget architectures retrained next to the demo's found one
BASELINE_K = 5
QUICK_SMOKE = "configs/smoke.yml"
#: the demo's supernet training before it was retuned (one pass of 32 per step), for the ranking report's
#: before/after comparison; the retraining that ranks the architectures is the same in both
BEFORE = ("train.optimizer.lr=0.05", "search.bn_recalibration_batches=2", "train.mini_batch=null", "train.workers=1")
#: the retuned training plus in-place distillation from the supernet's largest path (BigNAS / OFA)
DISTILL = (
    "agent.criterion_agent=knowledge_distillation",
    "criterion={teacher: supernet_max, weight: 0.5, temperature: 1.0}",
)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of the page: ``main.py -c config --title name overrides...``; ``role`` says where it is reported."""

    name: str
    config: str
    overrides: Tuple[str, ...] = ()
    #: search | seed | rank_quality | before, distill (the ranking report of the old settings, with distillation)
    role: str = "search"


def full_entries() -> List[Entry]:
    """Every digits search config of ``configs/`` (the demo with the random baseline), the ranking report of
    ``proxylessnas_rank_quality.yml``, and the demo under the extra seeds."""
    rank = "configs/proxylessnas_rank_quality.yml"
    entries = [
        Entry("rank_quality", rank, role="rank_quality"),
        Entry("rank_quality_before", rank, BEFORE, "before"),
        Entry("rank_quality_distill", rank, DISTILL, "distill"),
    ]
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yml"))):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        agent = raw.get("agent", {})
        if name in NOT_SEARCH_ENTRIES or agent.get("dataset_agent") != "digits":
            continue
        if agent.get("main_agent", "search") != "search":
            continue
        stem = name[: -len(".yml")]
        extra = (f"search.random_baseline={BASELINE_K}",) if stem == "demo" else ()
        entries.append(Entry(stem, f"configs/{name}", extra))
    entries += [Entry(f"demo_seed{s}", "configs/demo.yml", (f"seed={s}",), role="seed") for s in SEEDS]
    return entries


RANK_QUICK = ("agent.main_agent=rank_quality", "rank_quality.archs=3", "rank_quality.top_k=1")


def quick_entries() -> List[Entry]:
    """The same page from smoke-sized runs: one search with a 2-architecture baseline, a 3-architecture ranking
    report, one extra seed."""
    return [
        Entry("rank_quality", QUICK_SMOKE, RANK_QUICK, role="rank_quality"),
        Entry("rank_quality_before", QUICK_SMOKE, (*RANK_QUICK, "train.optimizer.lr=0.01"), role="before"),
        Entry("rank_quality_distill", QUICK_SMOKE, (*RANK_QUICK, *DISTILL), role="distill"),
        Entry("demo", QUICK_SMOKE, ("search.random_baseline=2",)),
        Entry("demo_seed1", QUICK_SMOKE, ("seed=1",), role="seed"),
    ]


def run_entry(entry: Entry, runs_dir: str) -> Tuple[Entry, str | None]:
    """Run (or resume, or reuse) one entry; returns ``(entry, error)`` with the last log line on failure."""
    run_dir = os.path.join(runs_dir, entry.name)
    if os.path.exists(os.path.join(run_dir, "metrics.json")):
        return entry, None
    if os.path.isdir(run_dir):
        cmd = ["main.py", "--resume", run_dir]
    else:
        cmd = ["main.py", "-c", entry.config, "--title", entry.name, f"output_dir={runs_dir}", *entry.overrides]
    with open(os.path.join(runs_dir, f"{entry.name}.log"), "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode == 0:
        return entry, None
    with open(os.path.join(runs_dir, f"{entry.name}.log"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return entry, f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"


def run_all(entries: Sequence[Entry], runs_dir: str, jobs: int, progress: bool) -> Dict[str, str]:
    """Every entry, ``jobs`` at a time, with a progress bar; returns ``{entry: error}`` of the failed ones."""
    os.makedirs(runs_dir, exist_ok=True)
    errors: Dict[str, str] = {}
    bar = tqdm(total=len(entries), desc="results", unit="run", disable=not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_entry, e, runs_dir) for e in entries]
        for future in concurrent.futures.as_completed(futures):
            entry, error = future.result()
            bar.set_postfix_str(entry.name)
            bar.update(1)
            if error:
                errors[entry.name] = error
                tqdm.write(f"results: {entry.name} failed ({error}); see {runs_dir}/{entry.name}.log")
    bar.close()
    return errors


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def found_network_latency(run_dir: str) -> float | None:
    """Milliseconds per image (batch 1, this machine) of the run's found network, measured once and kept in
    ``<run>/results_latency.json``; None when the run has no architecture."""
    cache = os.path.join(run_dir, "results_latency.json")
    if os.path.exists(cache):
        return read_json(cache)["latency_ms"]
    arch_path = os.path.join(run_dir, "searched_arch.json")
    if not os.path.exists(arch_path):
        return None
    config = load_config(os.path.join(run_dir, "config.yaml"))
    space = SEARCH_SPACES.get(config.agent.search_space_agent)
    info = DATASETS.get(config.agent.dataset_agent)(config.dataset).info()
    with open(arch_path, encoding="utf-8") as f:
        arch = decode_arch(f.read())
    model = space.build_model(config.search_space, info, arch)
    shape = (info.in_channels, info.input_size, info.input_size)
    ms = measure_module(model, shape, ["latency"], MeasureSettings(batch_size=1, warmup=5, runs=30, rounds=3))
    with open(cache, "w", encoding="utf-8") as f:
        json.dump({"latency_ms": ms["latency"]}, f)
    return ms["latency"]


def short_arch(arch: Mapping[str, Any], limit: int = 8) -> str:
    """``v0 v1 ...`` of an architecture's values in label order (the first ``limit``, then how many more)."""
    values = [("+".join(map(str, v)) or "none") if isinstance(v, list) else str(v) for v in arch.values()]
    shown = " ".join(values[:limit])
    return shown + (f" … (+{len(values) - limit})" if len(values) > limit else "")


def first_collapse_warning(run_dir: str) -> str | None:
    """The first warning of the differentiable strategy's collapse guard in the run's log, if it gave one."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if "collapse guard: after epoch" in line:
                text = line.split("collapse guard: ", 1)[1].strip()
                return text if len(text) <= 300 else text[:297] + "..."
    return None


def search_row(entry: Entry, run_dir: str) -> Dict[str, Any]:
    """One row of the search table from a finished run."""
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
        agent = yaml.safe_load(f)["agent"]
    seconds = metrics.get("seconds", {})
    return {
        "name": entry.name,
        "config": entry.config,
        "space": agent["search_space_agent"],
        "training": agent["training_strategy_agent"],
        "search": agent["search_strategy_agent"],
        "criterion": agent["criterion_agent"],
        "arch": short_arch(metrics["arch"]),
        "flops": metrics.get("model_flops", metrics.get("flops")),
        "params": metrics.get("model_params", metrics.get("params")),
        "latency_ms": found_network_latency(run_dir),
        "supernet_accuracy": metrics.get("supernet_valid_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "search_minutes": (seconds.get("supernet_training", 0.0) + seconds.get("search", 0.0)) / 60,
        "retrain_minutes": seconds.get("retrain", 0.0) / 60,
        "random_baseline": metrics.get("random_baseline"),
        "collapse": first_collapse_warning(run_dir),
        "measured_latency": metrics.get("measured_latency"),
    }


def _archs(report: Mapping[str, Any] | None) -> List[Any] | None:
    return None if report is None else [a["arch"] for a in report["architectures"]]


def _last_train_accuracy(run_dir: str) -> float | None:
    """The supernet's training accuracy in its last epoch (``checkpoints/supernet_state.json``'s history)."""
    path = os.path.join(run_dir, "checkpoints", "supernet_state.json")
    if not os.path.exists(path):
        return None
    history = read_json(path)["state"].get("history") or []
    return history[-1].get("accuracy") if history else None


def seed_report(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any] | None:
    """Spread of test accuracy and cost over the demo's seeds, and how often the same architecture was found."""
    if len(rows) < 2:
        return None
    acc = [r["test_accuracy"] for r in rows]
    flops = [r["flops"] for r in rows]
    archs = [r["arch"] for r in rows]
    most = max(archs.count(a) for a in archs)
    return {
        "rows": rows,
        "acc_mean": statistics.mean(acc),
        "acc_std": statistics.stdev(acc),
        "flops_mean": statistics.mean(flops),
        "flops_std": statistics.stdev(flops),
        "distinct": len(set(archs)),
        "same": most,
    }


def collect(entries: Sequence[Entry], runs_dir: str, errors: Mapping[str, str]) -> Dict[str, Any]:
    """Everything the page shows, from the run directories."""
    searches, seeds, reports = [], [], {}
    for entry in entries:
        run_dir = os.path.join(runs_dir, entry.name)
        if entry.name in errors or not os.path.exists(os.path.join(run_dir, "metrics.json")):
            continue
        if entry.role in ("rank_quality", "before", "distill"):
            report = read_json(os.path.join(run_dir, "rank_quality.json"))
            report["seconds"] = read_json(os.path.join(run_dir, "metrics.json")).get("seconds", {})
            report["config"], report["overrides"] = entry.config, list(entry.overrides)
            report["supernet_train_accuracy"] = _last_train_accuracy(run_dir)
            pairs = [(a["supernet_accuracy"], a["standalone_accuracy"]) for a in report["architectures"]]
            report["tau_interval"] = list(bootstrap_interval(*zip(*pairs)))
            standalone = [b for _, b in pairs]
            report["standalone_spread"] = (min(standalone), max(standalone))
            reports[entry.role] = report
            continue
        row = search_row(entry, run_dir)
        (seeds if entry.role == "seed" else searches).append(row)
    demo = next((r for r in searches if r["name"] == "demo"), None)
    return {
        "searches": searches,
        "ranking": reports.get("rank_quality"),
        "before": reports.get("before"),
        "distill": reports.get("distill"),
        "same_archs": _archs(reports.get("before")) == _archs(reports.get("rank_quality")),
        "demo": demo,
        "seeds": seed_report(([demo] if demo else []) + seeds),
        "errors": dict(errors),
        "missing": [
            e.name
            for e in entries
            if e.name not in errors and not os.path.exists(os.path.join(runs_dir, e.name, "metrics.json"))
        ],  # fmt: skip
    }


def render(data: Mapping[str, Any], quick: bool) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True)  # fmt: skip
    with open(TEMPLATE, encoding="utf-8") as f:
        template = env.from_string(f.read())
    return template.render(**data, quick=quick, machine=environment("cpu"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", default=os.environ.get("RESULTS_QUICK", "") not in ("", "0"),
                   help="smoke-sized runs (default from RESULTS_QUICK=1)")  # fmt: skip
    p.add_argument("--runs", help="run directory of the entries (default runs/results or runs/results_quick)")
    p.add_argument("--out", help="the page (default docs/RESULTS.md; quick: <runs>/RESULTS.md)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each uses one core)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render-only", action="store_true", help="run nothing: the page from the runs that exist")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs: must be >= 1, got {args.jobs}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs_dir = os.path.abspath(args.runs or os.path.join(ROOT, "runs", "results_quick" if args.quick else "results"))
    out = os.path.abspath(args.out or (os.path.join(runs_dir, "RESULTS.md") if args.quick else
                                       os.path.join(ROOT, "docs", "RESULTS.md")))  # fmt: skip
    entries = quick_entries() if args.quick else full_entries()
    errors = {} if args.render_only else run_all(entries, runs_dir, args.jobs, progress=not args.no_progress)
    data = collect(entries, runs_dir, errors)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    data["rank_png"] = None
    if (
        data["ranking"] is not None and data["ranking"]["architectures"]
    ):  # the page's figure sits next to it (run directories are not committed)
        data["rank_png"] = os.path.splitext(os.path.basename(out))[0] + "_rank_quality.png"
        shutil.copyfile(os.path.join(runs_dir, "rank_quality", "rank_quality.png"),
                        os.path.join(os.path.dirname(out), data["rank_png"]))  # fmt: skip
    page = render(data, args.quick)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    finished = len(entries) - len(data["missing"]) - len(errors)
    print(f"wrote {os.path.relpath(out, ROOT)} ({finished} of {len(entries)} runs finished)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
