"""Softmax cross-entropy and its label-smoothed variant."""

from dataclasses import dataclass
from typing import Annotated, Any

import nnabla as nn
import nnabla.functions as F

from core.registries import CRITERIA
from core.typed import Range
from criterion.base import BaseCriterion


@CRITERIA.register("cross_entropy")
class CrossEntropy(BaseCriterion):
    """Mean softmax cross-entropy."""

    def __call__(self, logits: nn.Variable, target: nn.Variable, **context: Any) -> nn.Variable:
        return F.mean(F.softmax_cross_entropy(logits, target))


@dataclass(frozen=True)
class LabelSmoothingParams:
    """``smoothing`` of the target distribution (0 = plain cross-entropy)."""

    smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.1


@CRITERIA.register("label_smoothing")
class LabelSmoothing(BaseCriterion):
    """Cross-entropy against ``(1 - eps) * one_hot + eps / K``."""

    Params = LabelSmoothingParams

    def __call__(self, logits: nn.Variable, target: nn.Variable, **context: Any) -> nn.Variable:
        eps = self.params.smoothing
        k = logits.shape[1]
        log_p = F.log_softmax(logits, axis=1)
        nll = -F.sum(log_p * F.one_hot(target, (k,)), axis=1)
        uniform = -F.mean(log_p, axis=1)
        return F.mean((1.0 - eps) * nll + eps * uniform)
