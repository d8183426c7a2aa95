"""Architectures spread over a cost range: one per evenly spaced cost level, drawn uniformly near its level.

The rule (``spread_over_cost``): levels ``c_0 .. c_{n-1}`` evenly spaced over ``[low, high]`` (the cheapest
architecture's cost and the most expensive's, or the budget target), spacing ``d``. Architecture j is a uniform
draw from the architectures whose cost lies in the band ``[c_j - d/2, c_j + d/2]`` (clipped to ``[low, high]``)
and that are not already picked. Uniform draws over the whole space pile up around its median cost, so a band
is reached from its nearer tail instead: by rejection from the smaller of the uniform draws with cost
<= the band's top (``BudgetSampler`` with that target) and those with cost >= its bottom (``BudgetSampler`` on
the negated cost model), both exact. Only the draws that land in the band are accepted, so the pick is uniform
over the band; when ``tries`` draws never land there (a band without architectures), the drawn new architecture
closest in cost to ``c_j`` is taken instead.
"""

from typing import List, Tuple

import numpy as np

from core.errors import ArchitectureError
from search_space.choices import Arch, SearchSpaceChoices, arch_key
from search_space.cost_model import CostModel
from search_strategy.sampler import BudgetSampler

#: draws tried per band before taking the closest new architecture drawn
DEFAULT_TRIES = 2000


def cost_levels(low: float, high: float, n: int) -> List[float]:
    """``n`` evenly spaced costs from ``low`` to ``high`` (both included)."""
    return np.linspace(float(low), float(high), int(n)).tolist()


def spread_over_cost(
    choices: SearchSpaceChoices,
    model: CostModel,
    low: float,
    high: float,
    n: int,
    rng: np.random.Generator,
    tries: int = DEFAULT_TRIES,
) -> Tuple[List[float], List[Arch]]:
    """The cost levels and ``n`` distinct architectures with costs in ``[low, high]``, one per level (rule above).

    Raises ArchitectureError when a level finds no architecture that is new and within ``[low, high]``.
    """
    levels = cost_levels(low, high, n)
    half = (high - low) / (2 * (n - 1)) if n > 1 else 0.0
    picked: List[Arch] = []
    keys: set = set()
    negated = model.scaled(-1.0)
    for level in levels:
        bottom, top = max(low, level - half), min(high, level + half)
        sides = [BudgetSampler(choices, model, top), BudgetSampler(choices, negated, -bottom)]
        sides = [s for s in sides if s.count() > 0]
        if not sides:
            raise ArchitectureError(f"no architecture costs between {bottom:.6g} and {top:.6g}")
        sampler = min(sides, key=lambda s: s.count())
        closest: Arch | None = None
        for _ in range(tries):
            arch = sampler.sample(rng)
            if arch is None:
                break
            cost = model.cost(arch)
            if arch_key(arch) in keys or not low <= cost <= high:
                continue
            if bottom <= cost <= top:
                closest = arch
                break
            if closest is None or abs(cost - level) < abs(model.cost(closest) - level):
                closest = arch
        if closest is None:
            raise ArchitectureError(
                f"no new architecture found near cost {level:.6g} after {tries} draws ({len(picked)} distinct so far)"
            )
        picked.append(dict(closest))
        keys.add(arch_key(closest))
    return levels, picked
