"""Benchmark: training steps with ``workers: 1`` vs ``workers: N`` (the step's mini-batches side by side on threads).

configs/demo.yml's workloads on 8x8 digits-like inputs, measured side by side in one run (the two loops alternate
step by step, so machine load hits both alike): uniform single-path supernet steps at batch 32 = 2 x 16 (the
supernet training) and steps of one sampled standalone network at batch 64 = 2 x 32 (the retraining). Both loops
of a pair start from the same weights and see the same batches and paths. Speed-up = median step time with one
worker / median with N; on 2 idle cores the ideal is 2.

    python bench/data_parallel.py [--workers 2] [--steps 30] [--seed 0]
"""

import argparse
import dataclasses
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from supernet_step import timed_steps  # noqa: E402  (it puts the root on sys.path)

from core.config import OptimizerConfig, TrainConfig  # noqa: E402
from core.registries import CRITERIA, SEARCH_SPACES, TRAINING_STRATEGIES  # noqa: E402
from core.run_logging import Monitor  # noqa: E402
from core.seed import make_rng  # noqa: E402
from dataset.base import ArrayDataset  # noqa: E402
from search_space.spec import DataInfo  # noqa: E402
from training_strategy.base import FixedNetwork  # noqa: E402
from training_strategy.loop import RunIO, TrainLoop  # noqa: E402

DEMO = dict(first_channels=16, first_mb_channels=16, stages=((24, 2, 1), (32, 2, 2), (48, 2, 1)), last_channels=128)


def pair(build, policy, cfg: TrainConfig, workers: int, data: ArrayDataset, io: RunIO) -> list:
    """Two loops on two copies of one network (same initial weights): one worker, ``workers`` workers."""
    criterion = CRITERIA.get("label_smoothing")(CRITERIA.get("label_smoothing").Params(smoothing=0.1))
    loops = []
    for w in (1, workers):
        net = build()
        if loops:
            initial = loops[0].network.get_parameters(grad_only=False)
            for k, v in net.get_parameters(grad_only=False).items():
                v.d = initial[k].d
        cfg_w = dataclasses.replace(cfg, workers=w)
        loops.append(TrainLoop(net, criterion, data, cfg_w, policy(), make_rng(0), io, "b"))
    return loops


def measure(name: str, loops: list, steps: int) -> float:
    for loop in loops:  # warm-up: allocations, first graphs, thread start
        timed_steps(loop, 2)
    times = [[], []]
    for _ in range(steps):
        for i, loop in enumerate(loops):
            times[i] += timed_steps(loop, 1)
    one, many = (float(np.median(t)) for t in times)
    print(
        f"  {name}: 1 worker {one * 1e3:.1f} ms/step, {loops[1].cfg.workers} workers {many * 1e3:.1f} ms/step, "
        f"speed-up {one / many:.2f}x"
    )
    for loop in loops:
        if loop.parallel is not None:
            loop.parallel.close()
    return one / many


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    space = SEARCH_SPACES.get("ProxylessNAS")
    params, info = space.Params(**DEMO), DataInfo(10, 1, 8)
    rng = np.random.default_rng(args.seed)
    n = 64 * 8
    data = ArrayDataset(rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n))
    io = RunIO(logging.getLogger("bench"), Monitor(None), None, progress=False)
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=4e-5)
    print(f"ProxylessNAS demo space, 8x8x1, {args.workers} workers, {os.cpu_count()} cores")
    uniform = TRAINING_STRATEGIES.get("uniform")
    ratios = {
        "supernet (uniform, batch 32 = 2 x 16)": measure(
            "supernet",
            pair(
                lambda: space.build_supernet(params, info),
                lambda: uniform(uniform.Params()),
                TrainConfig(epochs=1, batch_size=32, mini_batch=32 // args.workers, optimizer=opt),
                args.workers,
                data,
                io,
            ),
            args.steps,
        )
    }
    arch = space.build_supernet(params, info).choices().sample(rng)
    ratios["model (batch 64 = 2 x 32)"] = measure(
        "model",
        pair(
            lambda: space.build_model(params, info, arch),
            FixedNetwork,
            TrainConfig(epochs=1, batch_size=64, mini_batch=64 // args.workers, optimizer=opt),
            args.workers,
            data,
            io,
        ),
        args.steps,
    )
    print("speed-ups: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
