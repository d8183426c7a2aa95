"""Benchmark: one ProxylessNAS search iteration, ours vs NNablaNAS (the peer), measured alternately in one run.

The workload: one weight step on a train batch (one path drawn from the architecture distribution: forward,
backward, update) plus one architecture step on an architecture batch, on the ProxylessNAS space of the
peer's MobileNetV2 search net (stem 3x3 stride 2 -> 32, MB1 -> 16; stages (24,4,1) (32,4,1) (64,4,2) (96,4,1)
(160,4,2) (320,1,1): 21 choices of MB{3,6} x k{3,5,7} plus skip where the shape allows; head 1x1 -> 1280),
32x32x3 random data, batch 32, 10 classes. The peer's iteration is ``ProxylessNasSearcher.train_on_batch() +
valid_on_batch()``: its architecture step is REINFORCE over 10 sampled paths (graph rebuilt, forward on the
same validation batch, one Adam step), so ours is timed with the same estimator and number of paths
(``estimator: reinforce``, ``arch_samples: 10``) - the like-for-like figure the target applies to - and also
with ProxylessNAS's own two-path binary-gate estimator (``estimator: binary``). Figures: seconds per iteration
(median of ``--steps`` after ``--warmup``) and peak RSS (MiB). Target: our REINFORCE-10 time <= 0.8x the peer's.

    python bench/pnas_step.py [--batch 32] [--steps 4] [--warmup 1] [--rounds 1] [--skip-peer] [--json FILE]

Ours is driven as a run drives it: the ``proxyless`` strategy and ``TrainLoop.train_step()`` (the
architecture step in ``before_step``, then the weight step), momentum 0.1 / weight decay 4e-5 / clip 5 /
cosine and Adam 1e-3 (0.5, 0.999) on the alphas, as the peer's configuration. Each side runs in its own
subprocess (its peak RSS is its own); the peer side is set up and found as for ``bench/darts_step.py``
(``PEER_BENCH``, ``NNAS_VENV``, ``NNAS_SRC``, ``NNAS_OUT``; see the peer README).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from darts_step import parameter_count, peer_paths, peer_problem, run_side, timed_steps, verdict  # noqa: E402  (it puts the root on sys.path)

TIME_TARGET = 0.8
#: the peer's MobileNetV2 search net (conf/network/classification/mobilenet_cifar10.yaml, bench_pnas.py)
STAGES = ((24, 4, 1), (32, 4, 1), (64, 4, 2), (96, 4, 1), (160, 4, 2), (320, 1, 1))
ESTIMATORS = ("reinforce", "binary")


def build_ours(args, estimator: str):
    """``(loop, policy, supernet)``: ProxylessNAS on random data, set up as a search run sets it up."""
    import logging

    import numpy as np

    from core.config import OptimizerConfig, TrainConfig
    from core.context import set_context
    from core.registries import CRITERIA, SEARCH_SPACES, TRAINING_STRATEGIES
    from core.run_logging import Monitor
    from core.seed import make_rng, seed_nnabla
    from dataset.base import ArrayDataset
    from search_space.spec import DataInfo
    from training_strategy.loop import RunIO, TrainLoop
    from training_strategy.proxyless import ProxylessArchOptimizerConfig

    set_context("cpu")
    rng = make_rng(args.seed)
    seed_nnabla(rng)
    info = DataInfo(num_classes=10, in_channels=3, input_size=32)
    n = args.batch * 8
    train = ArrayDataset(rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n))
    space = SEARCH_SPACES.get("ProxylessNAS")
    t0 = time.perf_counter()
    supernet = space.build_supernet(space.Params(first_stride=2, stages=STAGES), info)
    t_build = time.perf_counter() - t0
    strategy = TRAINING_STRATEGIES.get("proxyless")
    adam = ProxylessArchOptimizerConfig(lr=1e-3, beta1=0.5, beta2=0.999)
    policy = strategy(strategy.Params(estimator=estimator, arch_samples=args.paths, arch_optimizer=adam))
    weight_data, arch_data = policy.split_train(train, make_rng(args.seed + 1))
    cfg = TrainConfig(
        epochs=200,
        batch_size=args.batch,
        lr_schedule="cosine",
        grad_clip=5.0,
        optimizer=OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=4e-5),
    )
    io = RunIO(logging.getLogger("bench"), Monitor(None), None, progress=False)
    criterion = CRITERIA.get("cross_entropy")(None)
    loop = TrainLoop(
        supernet, criterion, weight_data, cfg, policy, rng, io, "supernet", strategy_context={"arch_data": arch_data}
    )
    return loop, policy, supernet, t_build


def measure_ours(args) -> dict:
    """Time ``TrainLoop.train_step()`` of one estimator; runs in its own process (peak RSS is ours)."""
    loop, policy, supernet, t_build = build_ours(args, args.estimator)
    times, arch_times = timed_steps(loop, policy, args, f"ours {args.estimator}", "arch step")
    return {
        "side": f"ours {args.estimator}",
        "iteration_s": times[args.warmup :],
        "arch_step_s": arch_times[args.warmup :],
        "weight_params": parameter_count(supernet.get_parameters(grad_only=True)),
        "arch_params": parameter_count(supernet.arch_parameters()),
        "choices": len(supernet.choices()),
        "model_build_s": round(t_build, 3),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def side_args(args) -> list:
    return ["--batch", str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.steps)]


def run_ours(args, estimator: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--only", "ours", "--estimator", estimator]
    cmd += ["--seed", str(args.seed), "--paths", str(args.paths)] + side_args(args)
    out = run_side(cmd).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("RESULT_JSON ")][-1].split(" ", 1)[1])


def run_peer(args, paths: dict) -> dict:
    env = dict(os.environ, NNAS_SRC=paths["src"], NNAS_OUT=paths["out"])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        run_side([paths["python"], os.path.join(paths["bench"], "bench_pnas.py"), "--json", out] + side_args(args), env)
        with open(out) as f:
            res = json.load(f)
    return {
        "side": "peer",
        "iteration_s": res["iteration"]["all_s"],
        "train_on_batch_s": res["train_on_batch_s"],
        "valid_on_batch_s": res["valid_on_batch_s"],
        "weight_params": res["net_params_supernet"],
        "arch_params": res["arch_params"],
        "model_build_s": res["model_build_s"],
        "peak_rss_mib": res["peak_rss_mib_process"],
    }


def figures(results: list) -> dict:
    ts = [t for res in results for t in res["iteration_s"]]
    out = {
        "median_s": statistics.median(ts),
        "min_s": min(ts),
        "max_s": max(ts),
        "all_s": [round(t, 3) for t in ts],
        "peak_rss_mib": max(res["peak_rss_mib"] for res in results),
        "weight_params": results[0]["weight_params"],
        "arch_params": results[0]["arch_params"],
    }
    if "arch_step_s" in results[0]:
        out["arch_step_median_s"] = statistics.median(t for res in results for t in res["arch_step_s"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--paths", type=int, default=10, help="ours: REINFORCE paths per architecture step (peer: 10)")
    p.add_argument("--steps", type=int, default=4, help="timed iterations per side and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--rounds", type=int, default=1, help="alternations ours (both estimators), peer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-peer", action="store_true", help="measure ours only")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.add_argument("--only", choices=("ours",), help=argparse.SUPPRESS)  # internal: one side in this process
    p.add_argument("--estimator", choices=ESTIMATORS, default="reinforce", help=argparse.SUPPRESS)
    args = p.parse_args()
    if min(args.steps, args.rounds, args.batch, args.paths) < 1 or args.warmup < 0:
        p.error("--steps, --rounds, --batch and --paths must be >= 1, --warmup >= 0")
    if args.only == "ours":
        print("RESULT_JSON " + json.dumps(measure_ours(args)), flush=True)
        return
    paths = peer_paths()
    problem = None if args.skip_peer else peer_problem(paths)
    if problem is None and not args.skip_peer and not os.path.isfile(os.path.join(paths["bench"], "bench_pnas.py")):
        problem = f"no {paths['bench']}/bench_pnas.py (set PEER_BENCH)"
    if problem:
        print(f"pnas_step: peer not set up: {problem}; set it up as {paths['bench']}/README.md says, "
              "or pass --skip-peer", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    print(
        f"ProxylessNAS iteration: MobileNetV2 search space (21 choices), batch {args.batch}, 32x32x3, 10 classes; "
        f"arch step REINFORCE over {args.paths} paths (peer: 10) or binary gates; "
        f"{args.warmup} warm-up + {args.steps} timed, {args.rounds} round(s)",
        flush=True,
    )
    ours = {e: [] for e in ESTIMATORS}
    peer = []
    for r in range(args.rounds):
        for e in ESTIMATORS:
            print(f"  round {r + 1}: ours ({e}) ...", file=sys.stderr, flush=True)
            ours[e].append(run_ours(args, e))
        if not args.skip_peer:
            print(f"  round {r + 1}: peer ...", file=sys.stderr, flush=True)
            peer.append(run_peer(args, paths))
    summary = {"args": vars(args), **{f"ours_{e}": figures(ours[e]) for e in ESTIMATORS}}
    f = summary["peer"] = figures(peer) if peer else None
    print(f"\n{'':30}{'s/iter':>10}{'min..max':>14}{'arch step':>11}{'peak MiB':>10}{'/peer':>8}  target")
    for e in ESTIMATORS:
        o = summary[f"ours_{e}"]
        ratio = o["median_s"] / f["median_s"] if f else None
        summary[f"time_ratio_{e}"] = ratio
        summary[f"rss_ratio_{e}"] = o["peak_rss_mib"] / f["peak_rss_mib"] if f else None
        label = f"ours {e}" + (f" ({args.paths} paths)" if e == "reinforce" else " (two-path gates)")
        tail = (
            ""
            if ratio is None
            else f"{ratio:8.3f}"
            + (f"  <= {TIME_TARGET}: {verdict(ratio, TIME_TARGET)}" if e == "reinforce" else "  (ProxylessNAS's own)")
        )
        print(f"{label:30}{o['median_s']:10.2f}{o['min_s']:7.1f}..{o['max_s']:<5.1f}{o['arch_step_median_s']:11.2f}"
              f"{o['peak_rss_mib']:10.0f}{tail}")  # fmt: skip
    if f:
        print(f"{'peer (REINFORCE, 10 paths)':30}{f['median_s']:10.2f}{f['min_s']:7.1f}..{f['max_s']:<5.1f}"
              f"{'':11}{f['peak_rss_mib']:10.0f}")  # fmt: skip
        rss = ", ".join(f"{e} {summary[f'rss_ratio_{e}']:.3f}" for e in ESTIMATORS)
        print(f"peak RSS ours/peer: {rss}")
        o = summary["ours_reinforce"]
        print(f"weight / arch params: ours {o['weight_params']:,} / {o['arch_params']}, "
              f"peer {f['weight_params']:,} / {f['arch_params']}")  # fmt: skip
    else:
        print(f"(peer skipped: set it up as {paths['bench']}/README.md says to get the ratios)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
