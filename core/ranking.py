"""Rank agreement between two scorings of the same items (numpy): Kendall's tau-b, Spearman's rho, top-k overlap.

Used to say how well a supernet ranks architectures (``main_agent: rank_quality``) and how well a lookup table
ranks networks by cost (``hardware.validate``). Higher scores are better in both scorings. Inputs must be two
one-dimensional sequences of equal length >= 2 with finite values; anything else is a ValueError naming the
problem. A scoring whose values are all equal has no ranking: both correlations are then NaN (as in scipy).
"""

from typing import Callable, Sequence, Tuple

import numpy as np


def _pair(a: Sequence[float], b: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as float arrays, checked: one-dimensional, equal lengths >= 2, finite."""
    try:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"rankings: the scores must be numbers ({err})") from None
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"rankings: expected two flat sequences, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"rankings: the two scorings have different lengths ({len(x)} and {len(y)})")
    if len(x) < 2:
        raise ValueError(f"rankings: need at least 2 items to rank, got {len(x)}")
    for name, v in (("first", x), ("second", y)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise ValueError(f"rankings: the {name} scoring has a non-finite value {v[bad[0]]} at index {bad[0]}")
    return x, y


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks in ascending order; tied values share the mean of the ranks they occupy (``[1, 2.5, 2.5, 4]``)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, len(x)])
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (sizes + 1) / 2.0, sizes)
    return ranks


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant pairs) / sqrt(pairs untied in a * pairs untied in b).

    1 for the same order, -1 for the reverse; a pair tied in either scoring counts as neither concordant nor
    discordant. O(n²) over the pairs, meant for the tens to thousands of items a NAS report ranks.
    """
    x, y = _pair(a, b)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied_x, untied_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if untied_x == 0 or untied_y == 0:
        return float("nan")
    return float(np.sum(dx * dy) / np.sqrt(float(untied_x) * float(untied_y)))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (ties share their mean rank)."""
    x, y = _pair(a, b)
    rx, ry = average_ranks(x) - (len(x) + 1) / 2.0, average_ranks(y) - (len(y) + 1) / 2.0
    norm = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    if norm == 0.0:
        return float("nan")
    return float(np.clip(np.sum(rx * ry) / norm, -1.0, 1.0))


def top_k(values: Sequence[float], k: int) -> np.ndarray:
    """Indices of the ``k`` highest values, highest first; among equal values the earlier index ranks higher."""
    return np.argsort(-np.asarray(values, dtype=float), kind="stable")[:k]


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int) -> float:
    """The share of the ``k`` best items by ``a`` that are also among the ``k`` best by ``b`` (0 to 1).

    Ties at the k-th place are broken by position (earlier first), in both scorings.
    """
    x, y = _pair(a, b)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(x):
        raise ValueError(f"rankings: k must be an integer in 1..{len(x)} (the number of items), got {k!r}")
    return len(set(top_k(x, k).tolist()) & set(top_k(y, k).tolist())) / int(k)


def bootstrap_interval(
    a: Sequence[float],
    b: Sequence[float],
    statistic: Callable[[Sequence[float], Sequence[float]], float] = kendall_tau,
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Tuple[float, float]:
    """The percentile bootstrap interval of ``statistic(a, b)`` over the items (pairs drawn with replacement).

    Says how much a rank correlation over a dozen architectures can be trusted: with 12 items a tau of 0.3 is
    well within what chance gives. Resamples on which the statistic is undefined (a constant scoring) are left
    out; (nan, nan) if every one is. Deterministic for a given ``seed``.
    """
    x, y = _pair(a, b)
    if samples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"rankings: need samples >= 1 and 0 < level < 1, got {samples} and {level}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), size=(samples, len(x)))
    values = np.array([statistic(x[p], y[p]) for p in picks])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
