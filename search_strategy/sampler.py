"""Budget-aware sampling: exactly uniform draws from the architectures whose additive cost fits a target (no nnabla).

Method: a dynamic programme over labels counts the assignments whose *discretised* excess cost (cost minus the
label's cheapest allowed value, rounded down to a grid over the slack) fits the slack. Rounding down makes the
counted set a superset of the feasible one; drawing label by label from the programme's conditional counts is
exactly uniform over that superset, and rejecting the rare draw whose true cost is over the target leaves an
exactly uniform draw from the feasible set.

A gated cost model (cells, where an input choice decides whether an operation runs) is counted through its
additive lower bound, which again counts a superset; the exact cost decides acceptance. Acceptance then falls
with the gap between bound and cost, so a very tight budget on a cell space takes more draws.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from core.errors import ArchitectureError, ConfigError
from search_space.choices import Arch, SearchSpaceChoices
from search_space.cost_model import CostModel, GatedCost

#: ``{label: values}`` an architecture must draw from; labels left out are free
Allowed = Mapping[str, Sequence[Any]]

#: grid cells over the slack; a draw's true excess is below ``slack * (1 + free labels / bins)``
DEFAULT_BINS = 4096
#: finest grid the sampler refines to when draws keep landing over budget
MAX_BINS = 1 << 16
#: consecutive over-budget draws that make the sampler refine its grid (x16 cells)
_REFINE_AFTER = 16
#: over-budget draws in one call before giving up (only reachable with adversarial costs)
_MAX_DRAWS = 20_000
#: restricted sampling problems kept (least recently used dropped first)
_CACHED_PLANS = 64

#: per label, the sorted indices of the values an architecture may take
Key = Tuple[Tuple[int, ...], ...]


@dataclass
class _Plan:
    """One sampling problem: the values each label may take and, for a binding budget, the DP rows."""

    #: per label (choices order): the candidate values and their discretised excess costs
    values: List[Tuple[Any, ...]]
    steps: List[List[int]]
    #: rows[i][r] ~ number of completions of labels i.. with discretised excess <= r (each row scaled to max 1);
    #: empty when every combination fits (plain independent uniform draws)
    rows: List[np.ndarray]
    bins: int
    log_count: float
    #: every in-budget architecture, once ``members`` enumerated them
    members: List[Arch] | None = None


class BudgetSampler:
    """Exactly uniform draws from the architectures of ``choices`` with ``cost(arch) <= target``.

    ``cost`` None or ``target`` None/inf means unconstrained: independent uniform labels (the same random stream
    as ``choices.sample``). The unrestricted programme is built once; restricted ones are kept in a small LRU
    cache (evolution restricts to the same parent pair again and again).
    """

    def __init__(
        self,
        choices: SearchSpaceChoices,
        cost: CostModel | None,
        target: float | None,
        bins: int = DEFAULT_BINS,
    ):
        self.choices = choices
        #: the exact model (decides acceptance) and the additive models counted below and above it
        self.model = cost
        self.cost, self.upper = cost.bounds() if isinstance(cost, GatedCost) else (cost, cost)
        self.target = None if target is None or cost is None or target == math.inf else float(target)
        if bins < 1:
            raise ConfigError(f"budget sampler: bins must be >= 1, got {bins}")
        self.bins = int(bins)
        #: raw draws from the programme (accepted or rejected), for diagnostics
        self.draws = 0
        self._index = {label: {v: i for i, v in enumerate(cat.values)} for label, cat in choices.items()}
        self._full = tuple(tuple(range(len(cat))) for cat in choices.values())
        self._costs: Dict[str, List[float]] = {}
        self._upper: Dict[str, List[float]] = {}
        if self.cost is not None:
            for label in self.upper.table:
                if label not in choices:
                    raise ArchitectureError(f"cost model: label {label!r} is not in the search space")
            for label, cat in choices.items():
                row = self.cost.table.get(label)
                missing = [] if row is None else [v for v in cat.values if v not in row]
                if missing:
                    raise ArchitectureError(f"cost model: label {label!r} has no cost for value {missing[0]!r}")
                self._costs[label] = [0.0 if row is None else row[v] for v in cat.values]
                upper = self.upper.table.get(label)
                self._upper[label] = [0.0 if upper is None else upper[v] for v in cat.values]
        self._base_plan: _Plan | None = None
        self._plans: OrderedDict[Key, _Plan | None] = OrderedDict()

    def sample(self, rng: np.random.Generator, allowed: Allowed | None = None) -> Arch | None:
        """A uniformly random in-budget architecture with values in ``allowed``, or None when none exists."""
        key = self._key(allowed)
        plan = None if key is None else self._plan(key)
        if plan is None:
            return None
        if not plan.rows:
            return self._uniform(plan, rng, key is self._full)
        for rejected in range(_MAX_DRAWS):
            arch = self._draw(plan, rng)
            self.draws += 1
            if self.model.cost(arch) <= self.target:
                return arch
            if (rejected + 1) % _REFINE_AFTER == 0 and plan.bins < MAX_BINS:
                plan = self._plan(key, min(plan.bins * 16, MAX_BINS))
        why = (
            "the gated costs' additive bound admits far more architectures than fit; raise the target"
            if self.model is not self.cost
            else "the cost table is degenerate for discretisation"
        )
        raise ArchitectureError(
            f"budget sampler: {_MAX_DRAWS} draws in a row were over the target {self.target:g}; {why}"
        )

    def min_cost(self, allowed: Allowed | None = None) -> float:
        """Cost of the cheapest architecture within ``allowed`` (0 without a cost model, inf when none is allowed)."""
        key = self._key(allowed)
        if key is None:
            return math.inf
        return 0.0 if self.cost is None else self.cost.cost(self._extreme(key, min))

    def count(self, allowed: Allowed | None = None) -> float:
        """Upper bound of the number of in-budget architectures within ``allowed`` (exact when all fit or none)."""
        key = self._key(allowed)
        plan = None if key is None else self._plan(key)
        return 0.0 if plan is None else math.exp(plan.log_count)

    def feasible(self, allowed: Allowed | None = None, limit: int = 64) -> List[Arch] | None:
        """Every in-budget architecture within ``allowed`` (cached: do not mutate), or None if maybe over ``limit``."""
        return self.members(self.key(allowed), limit)

    def key(self, allowed: Allowed | None = None) -> Key | None:
        """Hashable normal form of ``allowed``: per label the sorted indices of its values (None: nothing allowed)."""
        return self._key(allowed)

    def members(self, key: Key | None, limit: int = 64) -> List[Arch] | None:
        """``feasible`` for a ``key`` already computed."""
        plan = None if key is None else self._plan(key)
        if plan is None:
            return []
        if plan.log_count > math.log(limit) + 1e-9:
            return None
        if plan.members is None:
            plan.members = self._members(plan)
        return plan.members

    def _members(self, plan: _Plan) -> List[Arch]:
        """Enumerate the plan's in-budget architectures (depth-first, pruned by the counting programme)."""
        labels = self.choices.labels
        free = [i for i, vals in enumerate(plan.values) if len(vals) > 1]
        template = {label: vals[0] for label, vals in zip(labels, plan.values)}
        out: List[Arch] = []

        def walk(depth: int, remaining: int, arch: Arch) -> None:
            if depth == len(free):
                if not plan.rows or self.model.cost(arch) <= self.target:
                    out.append(dict(arch))
                return
            i = free[depth]
            for k, value in enumerate(plan.values[i]):
                step = plan.steps[i][k] if plan.rows else 0
                if plan.rows and (step > remaining or plan.rows[i + 1][remaining - step] <= 0.0):
                    continue
                arch[labels[i]] = value
                walk(depth + 1, remaining - step, arch)

        walk(0, plan.bins, template)
        return out

    def _key(self, allowed: Allowed | None) -> Key | None:
        """Per label the sorted indices of its allowed values, or None when a label allows nothing."""
        if allowed is None:
            return self._full
        for label in allowed:
            if label not in self._index:
                raise ArchitectureError(f"budget sampler: unknown label {label!r} in the allowed values")
        key = []
        for (label, index), full in zip(self._index.items(), self._full):
            vals = allowed.get(label)
            if vals is None:
                key.append(full)
                continue
            try:
                if len(vals) == 1:
                    key.append((index[vals[0]],))
                elif len(vals) == 2:  # crossover: two parents' values
                    i, j = index[vals[0]], index[vals[1]]
                    key.append((i,) if i == j else (i, j) if i < j else (j, i))
                elif vals:
                    key.append(tuple(sorted({index[v] for v in vals})))
                else:
                    return None
            except KeyError as err:
                raise ArchitectureError(
                    f"budget sampler: label {label!r}: invalid allowed value {err.args[0]!r}; valid: {list(index)}"
                ) from None
        return tuple(key)

    def _plan(self, key: Key, bins: int | None = None) -> _Plan | None:
        """The cached sampling problem of ``key`` (rebuilt on a finer grid when ``bins`` is given)."""
        if key is self._full or key == self._full:
            if self._base_plan is None or bins is not None:
                self._base_plan = self._build(key, bins)
            return self._base_plan
        if bins is None and key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = self._plans[key] = self._build(key, bins)
        if len(self._plans) > _CACHED_PLANS:
            self._plans.popitem(last=False)
        return plan

    def _extreme(self, key: Key, pick: Callable[..., int]) -> Arch:
        """The allowed architecture taking, per label, the value ``pick`` (min/max) selects by the bound's cost."""
        costs = self._costs if pick is min else self._upper
        return {
            label: cat.values[pick(idx, key=costs[label].__getitem__)]
            for (label, cat), idx in zip(self.choices.items(), key)
        }

    def _build(self, key: Key, bins: int | None) -> _Plan | None:
        """Restrict every label to its allowed values and, if the budget binds, run the counting programme.

        ``bins`` None picks a grid of ``256 * free labels`` cells (at most ``self.bins``): the counted superset
        then exceeds the slack by under 1/256 of it.
        """
        values = [tuple(cat.values[i] for i in idx) for cat, idx in zip(self.choices.values(), key)]
        sizes_log = float(sum(math.log(len(v)) for v in values))
        if self.target is None:
            return _Plan(values, [], [], 0, sizes_log)
        if not self.cost.cost(self._extreme(key, min)) <= self.target:
            return None
        if self.upper.cost(self._extreme(key, max)) <= self.target:
            return _Plan(values, [], [], 0, sizes_log)
        costs = [[row[i] for i in idx] for row, idx in zip(self._costs.values(), key)]
        lows = [min(c) for c in costs]
        # margin so float rounding of the sums can never push a feasible arch out of the counted superset
        scale = abs(self.target) + abs(self.cost.base) + sum(max(map(abs, c)) for c in costs)
        slack = max(self.target - (self.cost.base + sum(lows)), 0.0) + 1e-9 * scale
        if bins is None:
            bins = max(1, min(self.bins, 256 * sum(1 for c in costs if len(c) > 1)))
        unit = bins / slack
        steps: List[List[int]] = []
        for i, (c, low) in enumerate(zip(costs, lows)):
            if len(c) == 1:
                steps.append([0])
                continue
            kept = [(v, x - low) for v, x in zip(values[i], c) if x - low <= slack]  # alone over the slack: never fits
            values[i] = tuple(v for v, _ in kept)
            steps.append([min(math.floor(e * unit), bins) for _, e in kept])
        rows = [np.ones(bins + 1)]
        log_count = 0.0
        for d in reversed(steps):
            if len(d) == 1:  # a fixed label (its one value is its cheapest: excess 0) leaves the counts alone
                rows.append(rows[-1])
                continue
            nxt, row = rows[-1], np.zeros(bins + 1)
            for s in d:
                row[s:] += nxt[: bins + 1 - s]
            top = row[-1]  # rows are non-decreasing: the last cell is the max
            log_count += math.log(top)
            rows.append(row / top)
        rows.reverse()
        return _Plan(values, steps, rows, bins, log_count)

    def _uniform(self, plan: _Plan, rng: np.random.Generator, whole: bool) -> Arch:
        """Independent uniform labels; over the whole space the same random stream as ``choices.sample``."""
        if whole:
            return {label: vals[int(rng.integers(len(vals)))] for label, vals in zip(self.choices, plan.values)}
        picks = rng.integers(np.array([len(vals) for vals in plan.values])).tolist()
        return {label: vals[k] for label, vals, k in zip(self.choices, plan.values, picks)}

    def _draw(self, plan: _Plan, rng: np.random.Generator) -> Arch:
        """One draw, uniform over the assignments whose discretised excess fits ``plan.bins``."""
        u = rng.random(len(plan.values)).tolist()
        remaining = plan.bins
        arch: Arch = {}
        for i, label in enumerate(self.choices):
            steps, vals = plan.steps[i], plan.values[i]
            k = 0
            if len(vals) > 1:
                row = plan.rows[i + 1]
                weights = [float(row[remaining - s]) if s <= remaining else 0.0 for s in steps]
                k = _pick(weights, u[i] * sum(weights))
            arch[label] = vals[k]
            remaining -= steps[k]
        return arch


def _pick(weights: List[float], x: float) -> int:
    """Index of the first positive weight whose cumulative sum passes ``x`` (the last positive one on round-off)."""
    acc, last = 0.0, 0
    for k, w in enumerate(weights):
        if w > 0.0:
            acc += w
            last = k
            if x < acc:
                return k
    return last
