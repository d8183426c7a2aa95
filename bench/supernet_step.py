"""Benchmark: a uniform supernet training step vs a training step of the standalone Model of the same path.

ProxylessNAS space (CIFAR backbone by default), 32x32 inputs, batch 32, measured side by side in one run:
for each sampled architecture the two steps alternate, so machine load hits both alike. The supernet
step includes what single-path training really pays per step (path switch, graph rebuild, per-group
solver updates); the Model keeps one static graph, as retraining does.

    python bench/supernet_step.py [--scale demo|cifar|both] [--archs 3] [--steps 2] [--width-mult 1.0]

The demo scale is configs/demo.yml's space on 8x8 digits-like inputs at batch 32, where per-step
bookkeeping (path switching, graph rebuild) weighs most; the CIFAR scale is the full-width backbone.
"""

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import OptimizerConfig, TrainConfig  # noqa: E402
from core.registries import CRITERIA, SEARCH_SPACES, TRAINING_STRATEGIES  # noqa: E402
from core.run_logging import Monitor  # noqa: E402
from core.seed import make_rng  # noqa: E402
from dataset.base import ArrayDataset  # noqa: E402
from search_space.spec import DataInfo  # noqa: E402
from training_strategy.base import FixedNetwork  # noqa: E402
from training_strategy.loop import RunIO, TrainLoop  # noqa: E402

UniformSampling = TRAINING_STRATEGIES.get("uniform")


class PinnedUniform(UniformSampling):
    """Uniform single-path training pinned to one path, still rebuilding the graph every step as uniform does."""

    def __init__(self, arch):
        super().__init__(UniformSampling.Params())
        self.arch, self.calls = arch, 0

    def before_step(self, supernet, epoch, step, rng):
        supernet.set_active(self.arch)

    def graph_key(self, supernet):
        self.calls += 1
        return self.calls


def timed_steps(loop: TrainLoop, steps: int) -> list:
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        loop.train_step()
        out.append(time.perf_counter() - t)
    return out


def measure(params, info: DataInfo, batch: int, archs: int, steps: int, seed: int) -> float:
    """Median supernet step / median Model step over ``archs`` paths, ``steps`` alternating steps each."""
    space = SEARCH_SPACES.get("ProxylessNAS")
    rng = np.random.default_rng(seed)
    n = batch * 4
    size, ch = info.input_size, info.in_channels
    data = ArrayDataset(rng.standard_normal((n, ch, size, size)).astype(np.float32), rng.integers(0, 10, n))
    criterion = CRITERIA.get("cross_entropy")(None)
    cfg = TrainConfig(epochs=1, batch_size=batch, optimizer=OptimizerConfig(lr=0.01))
    io = RunIO(logging.getLogger("bench"), Monitor(None), None, progress=False)
    supernet = space.build_supernet(params, info)
    print(
        f"ProxylessNAS {size}x{size}x{ch}, batch {batch}: "
        f"{len(supernet.choices())} layers, {supernet.choices().size():.3g} paths"
    )
    sup_times, model_times = [], []
    for i in range(archs):
        arch = supernet.choices().sample(rng)
        model = space.build_model(params, info, arch)
        sup = TrainLoop(supernet, criterion, data, cfg, PinnedUniform(arch), make_rng(i), io, "supernet")
        std = TrainLoop(model, criterion, data, cfg, FixedNetwork(), make_rng(i), io, "model")
        sup.train_step()  # warm-up: allocations, first graph
        std.train_step()
        s, m = [], []
        for _ in range(steps):  # alternate so that load affects both alike
            s += timed_steps(sup, 1)
            m += timed_steps(std, 1)
        sup_times += s
        model_times += m
        print(
            f"  arch {i}: supernet {np.median(s):.4f} s/step, model {np.median(m):.4f} s/step, "
            f"ratio {np.median(s) / np.median(m):.3f}"
        )
    ratio = float(np.median(sup_times) / np.median(model_times))
    print(f"  median supernet step {np.median(sup_times):.4f} s, model step {np.median(model_times):.4f} s")
    print(f"  supernet/model step-time ratio: {ratio:.3f} (target <= 1.10)")
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("demo", "cifar", "both"), default="both")
    p.add_argument("--archs", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per arch at CIFAR scale (demo scale: 10x)")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    space = SEARCH_SPACES.get("ProxylessNAS")
    ratios = {}
    if args.scale in ("demo", "both"):  # configs/demo.yml: digits 8x8, batch 32
        demo = space.Params(
            first_channels=16, first_mb_channels=16, stages=((24, 2, 1), (32, 2, 2), (48, 2, 1)), last_channels=128
        )
        ratios["demo 8x8"] = measure(demo, DataInfo(10, 1, 8), 32, args.archs, 10 * args.steps, args.seed)
    if args.scale in ("cifar", "both"):
        cifar = space.Params(width_mult=args.width_mult)
        ratios["cifar 32x32"] = measure(cifar, DataInfo(10, 3, 32), 32, args.archs, args.steps, args.seed)
    print("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
