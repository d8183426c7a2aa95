"""Paths drawn from the distributions of the architecture parameters, with their score ``d log P / d alpha``.

The distribution of a decision is the one its alphas define everywhere else (``Decision.probabilities``):
``softmax(alpha)`` over a LayerChoice's candidates; for an InputChoice of ``k`` of ``n`` inputs, ``k`` inputs
drawn one after another without replacement, each by ``softmax`` over the inputs still left (the inputs of
larger alpha are the likelier, as in the derivation); for an InputChoice of any number, each input taken with
probability ``sigmoid(alpha)``. The score of a draw is the gradient of the log-probability of how it was drawn
(for ``k`` of ``n``: of the ordered draw), which makes ``(L - b) * score`` an unbiased REINFORCE estimate.
"""

from typing import Dict, List, Mapping, Tuple

import numpy as np

from search_space.choices import Subset
from search_space.mutables import Decision


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max())
    return e / e.sum()


def draw_without_replacement(alpha: np.ndarray, k: int, rng: np.random.Generator) -> Tuple[List[int], np.ndarray]:
    """``k`` distinct indices, each drawn by ``softmax(alpha)`` over the ones left; and the draw's score."""
    alpha = np.asarray(alpha, np.float64)
    left = np.ones(alpha.size, bool)
    picked: List[int] = []
    score = np.zeros(alpha.size)
    for _ in range(k):
        p = np.zeros(alpha.size)
        p[left] = _softmax(alpha[left])
        i = int(rng.choice(alpha.size, p=p))
        score -= p
        score[i] += 1.0
        picked.append(i)
        left[i] = False
    return picked, score


def sample_decision(decision: Decision, rng: np.random.Generator) -> Tuple[int, np.ndarray]:
    """A value of ``decision`` drawn from its alphas' distribution: ``(index into its values, score)``."""
    alpha = decision.ensure_alpha().d.astype(np.float64)
    choice = decision.choice
    if not isinstance(choice, Subset):
        (i,), score = draw_without_replacement(alpha, 1, rng)
        return i, score
    if choice.k is None:
        q = 1.0 / (1.0 + np.exp(-alpha))
        taken = rng.random(alpha.size) < q
        return choice.values.index(tuple(int(i) for i in np.flatnonzero(taken))), taken - q
    picked, score = draw_without_replacement(alpha, choice.k, rng)
    return choice.values.index(tuple(sorted(picked))), score


def sample_path(
    decisions: Mapping[str, Decision], rng: np.random.Generator
) -> Tuple[Dict[str, int], Dict[str, np.ndarray]]:
    """One value per decision (``{label: index}``) and the scores of the draws (``{label: d log P / d alpha}``)."""
    indices, scores = {}, {}
    for label, d in decisions.items():
        indices[label], scores[label] = sample_decision(d, rng)
    return indices, scores
