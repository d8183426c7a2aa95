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
