"""Pareto front of (objective, cost) points: maximise the objective, minimise the cost (plain Python)."""

import math
from itertools import groupby
from typing import List, Sequence, Tuple


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the non-dominated ``(objective, cost)`` points, ordered by cost (ties by index).

    A point is dominated when another has an objective at least as high and a cost at least as low, better
    in one of them. Identical points do not dominate each other, so duplicates on the front are all kept.
    Points with a NaN coordinate are never on the front and dominate nothing.
    """
    valid = [(float(c), -float(o), i) for i, (o, c) in enumerate(points) if not (math.isnan(o) or math.isnan(c))]
    valid.sort()
    front: List[int] = []
    best: float | None = None  # highest objective among strictly cheaper points
    for _, group in groupby(valid, key=lambda t: t[0]):
        group = list(group)
        top = -group[0][1]
        # only the best objective at this cost survives, and only if cheaper points do not reach it
        if best is None or top > best:
            front.extend(i for _, neg, i in group if -neg == top)
            best = top
    return front


def non_dominated_sort(points: Sequence[Tuple[float, float]]) -> List[List[int]]:
    """Fronts of ``(objective, cost)`` points: the first is ``pareto_front``, the next the front of the rest, ...

    Every index appears in exactly one front (points with a NaN coordinate form the last one).
    """
    remaining = list(range(len(points)))
    fronts: List[List[int]] = []
    while remaining:
        front = [remaining[k] for k in pareto_front([points[i] for i in remaining])]
        if not front:  # only NaN points are left
            fronts.append(remaining)
            break
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def crowding_distance(points: Sequence[Tuple[float, float]], front: Sequence[int]) -> List[float]:
    """NSGA-II crowding distance of each index of ``front``: the normalised side lengths of the box its two
    neighbours span, summed over objective and cost; the extreme points of either coordinate get infinity."""
    distance = {i: 0.0 for i in front}
    for axis in (0, 1):
        order = sorted(front, key=lambda i: (points[i][axis], i))
        low, high = points[order[0]][axis], points[order[-1]][axis]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for k in range(1, len(order) - 1):
            gap = points[order[k + 1]][axis] - points[order[k - 1]][axis]
            distance[order[k]] += gap / (high - low)
    return [distance[i] for i in front]
