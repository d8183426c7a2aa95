"""Benchmark: one first-order DARTS iteration, ours vs NNablaNAS (the peer), measured alternately in one run.

The workload (the project's issue): one weight step on a train batch plus one architecture (alpha) step on
a validation batch, first order; the DARTS search network with 8 cells (reductions at 1/3 and 2/3), 16
initial channels, 4 nodes, alphas shared by the cells of a type, full (softmax-weighted) mode; batch 16 of
random CIFAR-shaped 32x32x3 data, 10 classes. Figures: seconds per iteration (median of ``--steps`` after
``--warmup``) and peak RSS (MiB). Targets: our time <= 0.7x the peer's, our peak RSS <= 0.5x the peer's.

    python bench/darts_step.py [--batch 16] [--init-channels 16] [--cells 8] [--steps 3] [--warmup 1]
                               [--rounds 1] [--skip-peer] [--json FILE]

Ours is driven as a run drives it: the "DARTS" space, the ``differentiable`` strategy (``algorithm: darts``,
``order: 1``) and ``TrainLoop.train_step()`` (the strategy's alpha step in ``before_step``, then the weight
step), momentum 0.025 / weight decay 3e-4 / clip 5 / cosine as DARTS, augmentation (pad 4, flip) on.
The peer is its own ``DartsSearcher.train_on_batch() + valid_on_batch()`` via ``bench_darts.py`` of the
peer benchmarks (see their README for the one-time set-up). Each side runs in its own subprocess, so its
peak RSS (``ru_maxrss``) is its own; with ``--rounds N`` the sides alternate N times (ours, peer, ours, ...)
and the figures are medians over every timed step / the largest RSS.

Environment (defaults as in the peer README): ``PEER_BENCH`` (the folder of ``bench_darts.py``, default
/work/shared/peer_bench), ``NNAS_VENV`` (the peer's venv, default $PEER_BENCH/_work/venv), ``NNAS_SRC`` and
``NNAS_OUT`` (passed on to the peer script; defaults $PEER_BENCH/_work/nnas_src and $PEER_BENCH/_work/out).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TIME_TARGET, RSS_TARGET = 0.7, 0.5


def peer_paths() -> dict:
    """Where the peer benchmark, its venv and its source tree are (environment, else the README's layout)."""
    bench = os.environ.get("PEER_BENCH", "/work/shared/peer_bench")
    work = os.path.join(bench, "_work")
    return {
        "bench": bench,
        "python": os.path.join(os.environ.get("NNAS_VENV", os.path.join(work, "venv")), "bin", "python"),
        "src": os.environ.get("NNAS_SRC", os.path.join(work, "nnas_src")),
        "out": os.environ.get("NNAS_OUT", os.path.join(work, "out")),
    }


def peer_problem(paths: dict) -> str | None:
    """Why the peer cannot run here (None if it can)."""
    script = os.path.join(paths["bench"], "bench_darts.py")
    if not os.path.isfile(script):
        return f"no {script} (set PEER_BENCH)"
    if not os.access(paths["python"], os.X_OK):
        return f"no peer venv at {os.path.dirname(os.path.dirname(paths['python']))} (set NNAS_VENV)"
    if not os.path.isdir(os.path.join(paths["src"], "nnabla_nas", "runner")):
        return f"no nnabla-nas source tree at {paths['src']} (set NNAS_SRC)"
    return None


# ----------------------------------------------------------------------------------------------------- ours


def build_ours(args):
    """``(loop, policy, supernet)``: first-order DARTS on random data, set up as a search run sets it up."""
    import logging

    import numpy as np

    from core.config import OptimizerConfig, TrainConfig
    from core.context import set_context
    from core.registries import CRITERIA, SEARCH_SPACES, TRAINING_STRATEGIES
    from core.run_logging import Monitor
    from core.seed import make_rng, seed_nnabla
    from dataset.base import ArrayDataset
    from search_space.darts import DARTSParams
    from search_space.spec import DataInfo
    from training_strategy.loop import RunIO, TrainLoop

    set_context("cpu")
    rng = make_rng(args.seed)
    seed_nnabla(rng)
    info = DataInfo(num_classes=10, in_channels=3, input_size=32)
    n = args.batch * 8  # half of it trains the weights, half the alphas
    images = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    train = ArrayDataset(images, rng.integers(0, 10, n), pad=4, flip=True)

    t0 = time.perf_counter()
    params = DARTSParams(init_channels=args.init_channels, layers=args.cells, nodes=args.nodes)
    supernet = SEARCH_SPACES.get("DARTS").build_supernet(params, info)
    t_build = time.perf_counter() - t0

    strategy = TRAINING_STRATEGIES.get("differentiable")
    policy = strategy(strategy.Params(algorithm="darts", order=1, arch_portion=0.5))
    weight_data, arch_data = policy.split_train(train, make_rng(args.seed + 1))
    cfg = TrainConfig(
        epochs=50,
        batch_size=args.batch,
        lr_schedule="cosine",
        grad_clip=5.0,
        optimizer=OptimizerConfig(name="momentum", lr=0.025, momentum=0.9, weight_decay=3e-4),
    )
    io = RunIO(logging.getLogger("bench"), Monitor(None), None, progress=False)
    criterion = CRITERIA.get("cross_entropy")(None)
    loop = TrainLoop(
        supernet, criterion, weight_data, cfg, policy, rng, io, "supernet", augment=True,
        strategy_context={"arch_data": arch_data},
    )  # fmt: skip
    return loop, policy, supernet, t_build


def timed_steps(loop, policy, args, label: str, step_name: str):
    """``(iteration times, architecture-step times)`` of ``args.warmup + args.steps`` ``TrainLoop.train_step()``
    calls, warm-up included; the architecture step (the policy's ``before_step``) is timed inside each."""
    arch_times = []
    before_step = policy.before_step

    def timed_before_step(*a, **k):
        t = time.perf_counter()
        before_step(*a, **k)
        arch_times.append(time.perf_counter() - t)

    policy.before_step = timed_before_step
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        loop.train_step()  # architecture step (before_step) + weight step; the first one also builds the graphs
        times.append(time.perf_counter() - t)
        what = f"warmup {i}" if i < args.warmup else f"step {i - args.warmup}"
        print(f"[{label}] {what}: {times[-1]:.3f}s ({step_name} {arch_times[-1]:.3f}s)", file=sys.stderr, flush=True)
    return times, arch_times


def parameter_count(params) -> int:
    """Elements of a ``{name: Variable}`` mapping."""
    import numpy as np

    return int(sum(int(np.prod(v.shape)) for v in params.values()))


def measure_ours(args) -> dict:
    """Time ``TrainLoop.train_step()`` of first-order DARTS; runs in its own process (peak RSS is ours)."""
    loop, policy, supernet, t_build = build_ours(args)
    times, alpha_times = timed_steps(loop, policy, args, "ours", "alpha step")
    return {
        "side": "ours",
        "iteration_s": times[args.warmup :],
        "alpha_step_s": alpha_times[args.warmup :],
        "weight_params": parameter_count(supernet.get_parameters(grad_only=True)),
        "arch_params": parameter_count(supernet.arch_parameters()),
        "model_build_s": round(t_build, 3),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


# ----------------------------------------------------------------------------------------------- the sides


def run_side(cmd: list, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one side in its own process, its progress lines passed through to our stderr."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        if line.startswith("[") and ("warmup" in line or "step" in line) or proc.returncode:
            print("    " + line, file=sys.stderr, flush=True)
    if proc.returncode:
        raise SystemExit(f"{cmd[1]} failed (exit {proc.returncode})")
    return proc


def side_args(args) -> list:
    return [
        "--batch", str(args.batch), "--init-channels", str(args.init_channels), "--cells", str(args.cells),
        "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip


def run_ours(args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--only", "ours", "--nodes", str(args.nodes)]
    cmd += ["--seed", str(args.seed)] + side_args(args)
    out = run_side(cmd).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("RESULT_JSON ")][-1].split(" ", 1)[1])


def run_peer(args, paths: dict) -> dict:
    env = dict(os.environ, NNAS_SRC=paths["src"], NNAS_OUT=paths["out"])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        cmd = [paths["python"], os.path.join(paths["bench"], "bench_darts.py"), "--split-steps", "0", "--json", out]
        run_side(cmd + side_args(args), env)
        with open(out) as f:
            res = json.load(f)
    return {
        "side": "peer",
        "iteration_s": res["iteration"]["all_s"],
        "weight_params": res["net_params"],
        "arch_params": res["arch_params"],
        "model_build_s": res["model_build_s"],
        "peak_rss_mib": res["peak_rss_mib_process"],
    }


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--nodes", type=int, default=4, help="ours only (the peer's SearchNet default is 4)")
    p.add_argument("--steps", type=int, default=3, help="timed iterations per side and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (graph construction)")
    p.add_argument("--rounds", type=int, default=1, help="alternations ours, peer (each a fresh process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-peer", action="store_true", help="measure ours only")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.add_argument("--only", choices=("ours",), help=argparse.SUPPRESS)  # internal: one side in this process
    args = p.parse_args()
    if min(args.steps, args.rounds, args.batch, args.cells) < 1 or args.warmup < 0:
        p.error("--steps, --rounds, --batch and --cells must be >= 1, --warmup >= 0")
    if args.only == "ours":
        print("RESULT_JSON " + json.dumps(measure_ours(args)), flush=True)
        return

    paths = peer_paths()
    problem = None if args.skip_peer else peer_problem(paths)
    if problem:
        print(
            f"darts_step: peer not set up: {problem}; set it up as {paths['bench']}/README.md says, "
            "or pass --skip-peer",
            file=sys.stderr,
        )
        sys.exit(2)

    print(
        f"first-order DARTS iteration: {args.cells} cells, C={args.init_channels}, {args.nodes} nodes, "
        f"batch {args.batch}, 32x32x3, 10 classes; {args.warmup} warm-up + {args.steps} timed, {args.rounds} round(s)",
        flush=True,
    )
    ours, peer = [], []
    for r in range(args.rounds):
        print(f"  round {r + 1}: ours ...", file=sys.stderr, flush=True)
        ours.append(run_ours(args))
        if not args.skip_peer:
            print(f"  round {r + 1}: peer ...", file=sys.stderr, flush=True)
            peer.append(run_peer(args, paths))

    def figures(results: list) -> dict:
        ts = [t for res in results for t in res["iteration_s"]]
        return {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "all_s": [round(t, 3) for t in ts],
            "peak_rss_mib": max(res["peak_rss_mib"] for res in results),
            "weight_params": results[0]["weight_params"],
            "arch_params": results[0]["arch_params"],
        }

    summary = {"args": vars(args), "ours": figures(ours)}
    summary["ours"]["alpha_step_median_s"] = statistics.median(t for res in ours for t in res["alpha_step_s"])
    o = summary["ours"]
    print(f"\n{'':24}{'ours':>12}{'peer':>12}{'ours/peer':>12}  target")
    if peer:
        summary["peer"] = f = figures(peer)
        summary["time_ratio"] = tr = o["median_s"] / f["median_s"]
        summary["rss_ratio"] = rr = o["peak_rss_mib"] / f["peak_rss_mib"]
        print(f"{'s/iter (median)':24}{o['median_s']:12.2f}{f['median_s']:12.2f}{tr:12.3f}  <= {TIME_TARGET}: "
              f"{verdict(tr, TIME_TARGET)}")  # fmt: skip
        print(f"{'s/iter (min..max)':24}{o['min_s']:6.1f}..{o['max_s']:<4.1f}{f['min_s']:6.1f}..{f['max_s']:<4.1f}")
        print(f"{'peak RSS (MiB)':24}{o['peak_rss_mib']:12.0f}{f['peak_rss_mib']:12.0f}{rr:12.3f}  <= {RSS_TARGET}: "
              f"{verdict(rr, RSS_TARGET)}")  # fmt: skip
        print(f"{'weight / arch params':24}{o['weight_params']:>12,}{f['weight_params']:>12,}")
        print(f"{'':24}{o['arch_params']:>12}{f['arch_params']:>12}")
    else:
        print(f"{'s/iter (median)':24}{o['median_s']:12.2f}{'-':>12}")
        print(f"{'s/iter (min..max)':24}{o['min_s']:6.1f}..{o['max_s']:<4.1f}")
        print(f"{'peak RSS (MiB)':24}{o['peak_rss_mib']:12.0f}{'-':>12}")
        print(f"(peer skipped: set it up as {paths['bench']}/README.md says to get the ratios)")
    print(f"ours: alpha step {o['alpha_step_median_s']:.2f} s of the iteration (median); all: {o['all_s']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
