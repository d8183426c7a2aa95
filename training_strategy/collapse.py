"""Collapse of a differentiable search (DARTS family): the alphas drifting to parameter-free operations.

Bi-level DARTS tends to favour operations without parameters (skip connections, pooling, identity): they
lower the architecture loss early, when the parametric candidates are still untrained, and the derived cell
ends up all skips. DARTS+ (Liang et al. 2019, "DARTS+: Improved Differentiable Architecture Search with Early
Stopping", arXiv:1909.06035, criterion 1) stops the search as soon as the normal cell holds two or more skip
connections. This module states that rule generically, for any space: a label is *dominated* by a parameter-free
candidate when one of them has the strictly highest probability among the candidates the derivation may pick
(DARTS's Zero op is never picked, so it never dominates); a search has *collapsed* once at least
``max_parameter_free`` watched labels are dominated. Which candidates are parameter-free is the caller's to say
(from the network's modules), so the rule needs no list of op names. DARTS+ counts the skips of the derived cell
(two edges kept per node); this counts every watched edge, so on a DARTS normal cell it fires no later than
DARTS+ does.

Pure numpy: no framework, so it can be checked on synthetic alpha histories.
"""

import fnmatch
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class LabelCandidates:
    """One label's candidates as the guard sees them (three tuples of the same length, in candidate order)."""

    names: Tuple[str, ...]
    #: the candidate holds no trainable parameter (pooling, skip, identity, Zero)
    parameter_free: Tuple[bool, ...]
    #: the derivation never picks the candidate (the Zero op), so it never dominates a label
    excluded: Tuple[bool, ...]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.parameter_free) == len(self.excluded):
            raise ValueError(f"candidates {self.names}: one parameter_free and one excluded flag per candidate")

    def kept(self) -> np.ndarray:
        """Indices of the candidates the derivation may pick."""
        return np.flatnonzero(~np.asarray(self.excluded, dtype=bool))

    def contested(self) -> bool:
        """Whether both a parameter-free and a parametric candidate may be picked (else there is nothing to watch)."""
        free = np.asarray(self.parameter_free, dtype=bool)[self.kept()]
        return bool(free.any() and not free.all())


@dataclass(frozen=True)
class EpochReport:
    """The guard's view of the alphas after one epoch."""

    epoch: int
    #: the watched labels a parameter-free candidate dominates, each with that candidate's name
    dominant: Dict[str, str]
    #: mean over the watched labels of the probability share of the parameter-free ones among the kept candidates
    mass: float
    #: at least ``max_parameter_free`` watched labels are dominated
    collapsed: bool
    #: collapsed now, and not at the epoch before: the moment the count reached the limit
    rose: bool

    @property
    def count(self) -> int:
        """How many watched labels a parameter-free candidate dominates."""
        return len(self.dominant)


def softmax(alpha: Sequence[float]) -> np.ndarray:
    """``softmax(alpha)`` in float64 (shifted by the maximum, so large alphas do not overflow)."""
    a = np.asarray(alpha, dtype=np.float64)
    e = np.exp(a - a.max())
    return e / e.sum()


class CollapseDetector:
    """DARTS+'s collapse rule over the labels with both parameter-free and parametric candidates.

    ``labels`` (fnmatch patterns, None = every label) narrows the watch, e.g. to the normal cell
    (``normal_*``) as DARTS+ does: a reduction cell dominated by pooling is common in healthy DARTS cells.
    """

    def __init__(
        self,
        candidates: Mapping[str, LabelCandidates],
        max_parameter_free: int = 2,
        labels: Sequence[str] | None = None,
    ):
        if max_parameter_free < 1:
            raise ValueError(f"max_parameter_free must be >= 1, got {max_parameter_free}")
        for pattern in labels or ():
            if not fnmatch.filter(candidates, pattern):
                shown = ", ".join(list(candidates)[:6]) + (", ..." if len(candidates) > 6 else "")
                raise ValueError(f"{pattern!r} matches no label with candidate operations ({shown})")
        picked = [k for k in candidates if labels is None or any(fnmatch.fnmatchcase(k, p) for p in labels)]
        self.candidates = {k: candidates[k] for k in picked if candidates[k].contested()}
        self.max_parameter_free = max_parameter_free

    @property
    def watched(self) -> List[str]:
        """The labels the rule counts, in the space's order."""
        return list(self.candidates)

    def dominant(self, label: str, alpha: Sequence[float]) -> str | None:
        """The parameter-free candidate dominating ``label`` under ``alpha``, or None (a tie is no dominance)."""
        c = self.candidates[label]
        p, kept = self._probabilities(label, alpha), c.kept()
        free = [int(i) for i in kept if c.parameter_free[i]]
        parametric = [int(i) for i in kept if not c.parameter_free[i]]
        best = max(free, key=lambda i: p[i])  # the first of equally probable ones
        return c.names[best] if p[best] > max(p[i] for i in parametric) else None

    def mass(self, label: str, alpha: Sequence[float]) -> float:
        """Share of the kept candidates' probability that the parameter-free ones hold."""
        c = self.candidates[label]
        p, kept = self._probabilities(label, alpha), c.kept()
        free = [int(i) for i in kept if c.parameter_free[i]]
        return float(p[free].sum() / p[kept].sum())

    def _probabilities(self, label: str, alpha: Sequence[float]) -> np.ndarray:
        names = self.candidates[label].names
        if len(alpha) != len(names):
            raise ValueError(f"label {label!r}: {len(alpha)} alphas for the {len(names)} candidates {names}")
        return softmax(alpha)

    def report(self, epoch: int, alphas: Mapping[str, Sequence[float]], previous: EpochReport | None) -> EpochReport:
        """The report of ``epoch`` from its alphas (``{label: alpha}``, every watched label) and the one before."""
        found = {label: self.dominant(label, alphas[label]) for label in self.watched}
        dominant = {label: op for label, op in found.items() if op is not None}
        masses = [self.mass(label, alphas[label]) for label in self.watched]
        collapsed = len(dominant) >= self.max_parameter_free
        rose = collapsed and not (previous is not None and previous.collapsed)
        return EpochReport(epoch, dominant, float(np.mean(masses)) if masses else 0.0, collapsed, rose)

    def reports(self, history: Sequence[Mapping[str, Sequence[float]]]) -> List[EpochReport]:
        """One report per epoch of ``history`` (the alphas after epochs 1, 2, ...)."""
        out: List[EpochReport] = []
        for epoch, alphas in enumerate(history, start=1):
            out.append(self.report(epoch, alphas, out[-1] if out else None))
        return out
