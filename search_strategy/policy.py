"""Learned architecture distributions for policy-gradient strategies (numpy only, no nnabla).

``ArchPolicy`` parametrises one distribution per label: the value logits are ``z_l = M_l @ theta_l`` and
``p_l = softmax(z_l)``. A Categorical has ``M_l = I`` (one logit per value). A Subset (k of n inputs, or any
number when ``k`` is None) has one logit per *input* and ``M_l`` the value-by-input incidence matrix, so
``p(S) ~ exp(sum of theta_i, i in S)``: independent Bernoulli(sigmoid(theta_i)) inputs for any-of-n, the same
Bernoullis conditioned on exactly ``k`` chosen for k-of-n. Its mode is the ``k`` largest logits (those > 0 for
any-of-n), which is what ``derive_arch`` picks from the per-input marginals ``M^T p``.

``Conditioned`` is that product distribution conditioned on ``cost(arch) <= target`` for an additive cost model:
the sampler's counting programme weighted by the probabilities (costs rounded down to a grid, so it counts a
superset of the feasible set; callers reject the rare draw whose exact cost is over the target). It also gives
the conditioned per-label marginals ``q_l`` (forward-backward), hence the exact score of a conditioned draw:
``d log q(a) / d z_l = onehot(a_l) - q_l`` (the unconditioned score ``onehot - p`` minus the normaliser's).
"""

import math
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from core.errors import ArchitectureError
from search_space.choices import Arch, SearchSpaceChoices, Subset
from search_space.cost_model import AdditiveCost, CostModel, GatedCost
from search_strategy.base import Budget, SearchTracker
from search_strategy.differentiable import DifferentiableSearch, DifferentiableSearchParams, derive_arch

#: grid cells per free label over the slack (at most ``MAX_BINS`` in all)
BINS_PER_LABEL = 256
MAX_BINS = 1 << 16
#: draws of the superset rejected (exact cost over the target) before the grid is refined
_REFINE_AFTER = 32


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ArchPolicy:
    """The per-label parametrisation of a space's choices: flat parameters -> value probabilities."""

    def __init__(self, choices: SearchSpaceChoices):
        self.choices = choices
        self.labels = choices.labels
        self.maps: List[np.ndarray | None] = []
        self.slices: List[slice] = []
        start = 0
        for cat in choices.values():
            if isinstance(cat, Subset):
                m = np.zeros((len(cat), cat.n))
                for row, value in enumerate(cat.values):
                    m[row, list(value)] = 1.0
                self.maps.append(m)
                size = cat.n
            else:
                self.maps.append(None)
                size = len(cat)
            self.slices.append(slice(start, start + size))
            start += size
        #: number of parameters (logits) in all
        self.size = start
        self._index = [{v: i for i, v in enumerate(cat.values)} for cat in choices.values()]

    def value_logits(self, theta: np.ndarray) -> List[np.ndarray]:
        """Per label the value logits ``(..., n_values)`` of parameters ``(..., size)``."""
        out = []
        for sl, m in zip(self.slices, self.maps):
            t = theta[..., sl]
            out.append(t if m is None else t @ m.T)
        return out

    def probabilities(self, theta: np.ndarray) -> List[np.ndarray]:
        """Per label the value probabilities ``(..., n_values)``."""
        return [softmax(z) for z in self.value_logits(theta)]

    def param_grad(self, value_grads: Sequence[np.ndarray]) -> np.ndarray:
        """Chain rule: gradients w.r.t. the value logits -> w.r.t. the flat parameters (same leading axes)."""
        lead = value_grads[0].shape[:-1]
        out = np.zeros(lead + (self.size,))
        for sl, m, g in zip(self.slices, self.maps, value_grads):
            out[..., sl] = g if m is None else g @ m
        return out

    def indices(self, arch: Mapping[str, Any]) -> List[int]:
        """Value index per label of ``arch``."""
        cats = self.choices.values()
        return [index[cat.normalize(arch[label])] for label, cat, index in zip(self.labels, cats, self._index)]

    def arch(self, indices: Sequence[int]) -> Arch:
        """The architecture of one value index per label."""
        return {label: cat.values[int(i)] for (label, cat), i in zip(self.choices.items(), indices)}

    def hints(self, probs: Sequence[np.ndarray]) -> Dict[str, List[float]]:
        """``{label: probabilities}`` in the form ``derive_arch`` reads: per value, or per input of a Subset."""
        return {label: (p if m is None else m.T @ p).tolist() for label, p, m in zip(self.labels, probs, self.maps)}


def most_probable_in_budget(
    choices: SearchSpaceChoices,
    hints: Mapping[str, Sequence[float]],
    budget: Budget,
    rng: np.random.Generator,
    repair_samples: int = 256,
    max_sample_tries: int = 1000,
) -> Arch:
    """``derive_arch`` of the probabilities (``ArchPolicy.hints`` form), repaired into budget as the
    differentiable strategy repairs (the least confident decisions give way first)."""
    arch = derive_arch(choices, hints)
    if budget.within(arch):
        return arch
    params = DifferentiableSearchParams(max_sample_tries=max_sample_tries, repair_samples=repair_samples)
    fresh = SearchTracker(lambda a: {}, budget, params.objective)  # repair draws only among unseen archs
    return DifferentiableSearch(params).repair(choices, hints, arch, budget, rng, fresh)


def entropy_grad(probs: Sequence[np.ndarray]) -> Tuple[float, List[np.ndarray]]:
    """Summed entropy of the per-label distributions and its gradient w.r.t. the value logits."""
    total, grads = 0.0, []
    for p in probs:
        logp = np.log(np.clip(p, 1e-300, 1.0))
        h = -float((p * logp).sum())
        total += h
        grads.append(-p * (logp + h))
    return total, grads


def value_costs(choices: SearchSpaceChoices, model: CostModel) -> Tuple[float, List[np.ndarray]]:
    """``(base, per label the cost of each value)`` of an additive model (a gated one: its additive lower bound)."""
    lower = model.bounds()[0] if isinstance(model, GatedCost) else model
    costs = []
    for label, cat in choices.items():
        row = lower.table.get(label)
        try:
            costs.append(np.array([0.0 if row is None else row[v] for v in cat.values]))
        except KeyError as err:
            raise ArchitectureError(f"cost model: label {label!r} has no cost for value {err.args[0]!r}") from None
    return lower.base, costs


def additive_view(choices: SearchSpaceChoices, budget: Budget) -> CostModel | None:
    """The budget's additive cost model; for a plain cost function, the additive model probed from it.

    The probe prices one change of one label at a time from the first value of every label: exact when the
    cost is additive, its first-order approximation otherwise (the budget's own cost still decides what fits).
    """
    if budget.additive is not None:
        return budget.additive
    if budget.cost is None:
        return None
    ref = {label: cat.values[0] for label, cat in choices.items()}
    base = float(budget.cost(ref))
    table = {
        label: {v: float(budget.cost({**ref, label: v})) - base for v in cat.values} for label, cat in choices.items()
    }
    return AdditiveCost(base, table)


def expected_cost(
    probs: Sequence[np.ndarray], model: CostModel, choices: SearchSpaceChoices, costs: Sequence[np.ndarray]
) -> Tuple[float, List[np.ndarray]]:
    """Expected cost under independent labels and its gradient w.r.t. each label's probabilities (exact, also
    for a gated model: a term costs ``P(its input is chosen) * E[its label's cost]``)."""
    if not isinstance(model, GatedCost):
        total = model.base + sum(float(p @ c) for p, c in zip(probs, costs))
        return total, [np.array(c, dtype=np.float64) for c in costs]
    additive = model.additive
    labels = choices.labels
    grads = [
        np.array([additive.table.get(label, {}).get(v, 0.0) for v in cat.values]) for label, cat in choices.items()
    ]
    total = additive.base + sum(float(p @ g) for p, g in zip(probs, grads))
    pos = {label: i for i, label in enumerate(labels)}
    for t in model.terms:
        gi, li = pos[t.gate], pos[t.label]
        takes = np.array([1.0 if t.index in v else 0.0 for v in choices[t.gate].values])
        term = np.array([t.costs[v] for v in choices[t.label].values])
        p_gate, e_label = float(probs[gi] @ takes), float(probs[li] @ term)
        total += p_gate * e_label
        grads[gi] = grads[gi] + takes * e_label
        grads[li] = grads[li] + term * p_gate
    return total, grads


class Conditioned:
    """Independent per-label distributions ``probs`` conditioned on ``base + sum(costs) <= target``.

    ``target`` None (or a target every architecture fits) leaves the distribution as it is. ``feasible`` is
    False when not even the cheapest architecture fits.
    """

    def __init__(self, probs: Sequence[np.ndarray], base: float, costs: Sequence[np.ndarray], target: float | None):
        self.probs = [np.asarray(p, dtype=np.float64) for p in probs]
        self.costs = [np.asarray(c, dtype=np.float64) for c in costs]
        lows = [float(c.min()) for c in self.costs]
        self.target = target
        self.feasible = target is None or base + sum(lows) <= target
        self.binding = self.feasible and target is not None and base + sum(float(c.max()) for c in self.costs) > target
        self._base, self._lows = base, lows
        if self.binding:
            free = sum(1 for c in self.costs if c.max() > c.min())
            self._build(max(1, min(MAX_BINS, BINS_PER_LABEL * free)))

    def _build(self, bins: int) -> None:
        """Discretise the excess costs on ``bins`` cells of the slack and run the weighted counting programme."""
        scale = abs(self.target) + abs(self._base) + sum(float(np.abs(c).max()) for c in self.costs)
        # margin so float rounding can never push a feasible architecture out of the counted superset
        slack = max(self.target - self._base - sum(self._lows), 0.0) + 1e-9 * scale
        self.bins, unit = bins, bins / slack
        self.steps, self.weights = [], []
        for p, c, low in zip(self.probs, self.costs, self._lows):
            excess = c - low
            self.steps.append(np.minimum(np.floor(excess * unit), bins).astype(np.int64))
            self.weights.append(np.where(excess <= slack, p, 0.0))  # alone over the slack: never fits
        # back[l][r] ~ mass of labels l.. with discretised excess <= r (rows rescaled to max 1, logs kept)
        self.back = [np.ones(bins + 1)]
        self._log_back = [0.0]
        for w, s in zip(reversed(self.weights), reversed(self.steps)):
            nxt, row = self.back[-1], np.zeros(bins + 1)
            for wv, sv in zip(w, s):
                if wv > 0.0:
                    row[sv:] += wv * nxt[: bins + 1 - sv]
            top = float(row.max())
            self.back.append(row / top)
            self._log_back.append(self._log_back[-1] + math.log(top))
        self.back.reverse()
        self._log_back.reverse()
        self._marginals: List[np.ndarray] | None = None

    @property
    def log_mass(self) -> float:
        """Log-probability (under the unconditioned labels) of the counted in-budget superset."""
        if not self.feasible:
            return -math.inf
        if not self.binding:
            return 0.0
        return self._log_back[0] + math.log(self.back[0][self.bins])

    def marginals(self) -> List[np.ndarray]:
        """Per label the conditioned value probabilities ``q_l`` (the labels' own when the budget binds not)."""
        if not self.binding:
            return self.probs
        if self._marginals is None:
            out, fwd = [], np.zeros(self.bins + 1)
            fwd[0] = 1.0  # forward: mass of the labels before l by exactly used excess
            for i, (w, s) in enumerate(zip(self.weights, self.steps)):
                rest = self.back[i + 1]
                mass = np.array(
                    [wv * float(fwd[: self.bins + 1 - sv] @ rest[self.bins - sv :: -1]) if wv > 0 else 0.0
                     for wv, sv in zip(w, s)]
                )  # fmt: skip
                out.append(mass / mass.sum())
                nxt = np.zeros(self.bins + 1)
                for wv, sv in zip(w, s):
                    if wv > 0.0:
                        nxt[sv:] += wv * fwd[: self.bins + 1 - sv]
                fwd = nxt / nxt.sum()
            self._marginals = out
        return self._marginals

    def draw(self, rng: np.random.Generator) -> List[int]:
        """One value index per label from the (counted superset of the) conditioned distribution."""
        u = rng.random(len(self.probs))
        if not self.binding:
            return [_pick(p, x) for p, x in zip(self.probs, u)]
        remaining, out = self.bins, []
        for i, (w, s) in enumerate(zip(self.weights, self.steps)):
            rest = self.back[i + 1]
            ok = s <= remaining
            weight = np.where(ok, w * rest[np.where(ok, remaining - s, 0)], 0.0)
            k = _pick(weight / weight.sum(), u[i])
            out.append(k)
            remaining -= int(s[k])
        return out

    def sample(self, rng: np.random.Generator, accept: Callable[[List[int]], bool], tries: int) -> List[int] | None:
        """A draw that ``accept`` (the exact cost check) takes, or None after ``tries`` rejected draws."""
        if not self.feasible:
            return None
        for n in range(tries):
            indices = self.draw(rng)
            if accept(indices):
                return indices
            if self.binding and (n + 1) % _REFINE_AFTER == 0 and self.bins < MAX_BINS:
                self._build(min(self.bins * 16, MAX_BINS))
        return None


def _pick(p: np.ndarray, x: float) -> int:
    """Inverse-CDF pick of ``x`` in [0, 1) from probabilities ``p`` (never a zero-probability index)."""
    cdf = np.cumsum(p)
    k = min(int(np.searchsorted(cdf, x * cdf[-1], side="right")), len(p) - 1)
    return k if p[k] > 0 else int(np.flatnonzero(p > 0)[-1])
