"""Benchmark: architectures whose cost a lookup table predicts per second (``predict_indices``, one core).

A constrained search asks the table for the cost of every candidate it considers; this measures how many
index-encoded architectures per second the table prices, for a macro space (ProxylessNAS, CIFAR backbone) and a
cell space whose edges cost only while taken (DARTS: a gated cost), next to the per-architecture ``predict``.

    python bench/constraint_eval.py [--archs 200000] [--repeats 3]

Target: >= 100,000 architectures per second on one core.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.registries import SEARCH_SPACES  # noqa: E402
from search_space.spec import DataInfo  # noqa: E402

TARGET = 100_000


def rate(fn, n: int, repeats: int) -> float:
    """Best-of-``repeats`` items per second of ``fn()`` pricing ``n`` items."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spaces = [
        ("ProxylessNAS", SEARCH_SPACES.get("ProxylessNAS").Params(), DataInfo(10, 3, 32)),
        ("DARTS", SEARCH_SPACES.get("DARTS").Params(init_channels=8, layers=5), DataInfo(10, 3, 32)),
    ]
    print(f"{'space':<14}{'labels':>8}{'predict_indices /s':>22}{'predict /s':>14}{'target':>10}")
    ok = True
    for name, params, info in spaces:
        lut = SEARCH_SPACES.get(name).build_lookup_table(params, info)
        rng = np.random.default_rng(0)
        sizes = np.asarray([len(c) for c in lut.choices.values()])
        idx = (rng.random((args.archs, len(sizes))) * sizes).astype(np.int64)
        batch = rate(lambda lut=lut, idx=idx: lut.predict_indices(idx, "flops"), args.archs, args.repeats)
        few = [lut.choices.from_indices(row) for row in idx[:2000]]
        single = rate(lambda lut=lut, few=few: [lut.predict(a, "flops") for a in few], len(few), args.repeats)
        check = [lut.predict(a, "flops") for a in few[:50]]
        assert np.allclose(lut.predict_indices(idx[:50], "flops"), check), "vectorised and single predictions differ"
        ok &= batch >= TARGET
        verdict = "PASS" if batch >= TARGET else "MISS"
        print(f"{name:<14}{len(sizes):>8}{batch:>22,.0f}{single:>14,.0f}{verdict:>10}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
