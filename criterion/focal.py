"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, arXiv:1708.02002), multi-class.

    FL = mean over the batch of  -alpha_t * (1 - p_t) ** gamma * log p_t

``p_t`` is the softmax probability of the true class. ``-log p_t`` is nnabla's softmax cross-entropy (a
log-softmax inside, stable for any logits), and ``1 - p_t`` is the sum of the *other* classes'
probabilities, which keeps its precision when ``p_t`` rounds to 1 (``1 - exp(log p_t)`` would be 0 there
and, for ``gamma < 1``, give an infinite derivative times zero = NaN). At ``gamma = 0`` without ``alpha``
the graph is the cross-entropy's own, so values and gradients equal it exactly.

``alpha`` (optional) weights each class; the reduction is the plain mean over the batch (as in the paper
and torchvision's ``sigmoid_focal_loss``), not a mean normalised by the weights. Its length must be the
number of classes, checked against the run's data before anything trains (``setup``), and again against
the logits when the loss is built.
"""

from dataclasses import dataclass
from typing import Any, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np

from core.errors import ConfigError
from core.registries import CRITERIA
from core.typed import NonNegativeFloat
from criterion.base import BaseCriterion, CriterionSetup

#: floor of ``1 - p_t``: it underflows to 0 only when ``p_t`` is 1 in float32, where the loss is 0 anyway
_TINY = 1e-30


@dataclass(frozen=True)
class FocalParams:
    """Focusing exponent ``gamma`` (0 = cross-entropy) and optional per-class weights ``alpha``."""

    gamma: NonNegativeFloat = 2.0
    #: one weight per class (alpha_t of the paper); None = every class weighs 1
    alpha: Tuple[NonNegativeFloat, ...] | None = None


@CRITERIA.register("focal")
class Focal(BaseCriterion):
    """Multi-class focal loss ``-alpha_t (1 - p_t)^gamma log p_t``, averaged over the batch."""

    Params = FocalParams

    def __init__(self, params: FocalParams):
        super().__init__(params)
        if params.alpha is not None and not any(a > 0 for a in params.alpha):
            raise ConfigError("criterion.alpha: needs at least one positive class weight (all zero = no loss)")

    def setup(self, run: CriterionSetup) -> None:
        """Refuse an ``alpha`` whose length is not the dataset's number of classes."""
        self._check_classes(run.data.num_classes, f"of dataset {run.dataset_name}")

    def _check_classes(self, num_classes: int, where: str) -> None:
        alpha = self.params.alpha
        if alpha is not None and len(alpha) != num_classes:
            raise ConfigError(
                f"criterion.alpha: {len(alpha)} weights for the {num_classes} classes {where}; give one per class"
            )

    def __call__(self, logits: nn.Variable, target: nn.Variable, **context: Any) -> nn.Variable:
        p = self.params
        k = logits.shape[1]
        self._check_classes(k, "of the logits")
        loss = F.softmax_cross_entropy(logits, target)  # -log p_t, (B, 1)
        onehot = F.one_hot(target, (k,)) if p.gamma > 0 or p.alpha is not None else None
        if p.gamma > 0:
            rest = F.sum(F.softmax(logits, axis=1) * (1.0 - onehot), axis=1, keepdims=True)  # 1 - p_t
            loss = F.pow_scalar(F.maximum_scalar(rest, _TINY), p.gamma) * loss
        if p.alpha is not None:
            weights = nn.Variable.from_numpy_array(np.asarray(p.alpha, np.float32).reshape(1, k), need_grad=False)
            loss = F.sum(onehot * weights, axis=1, keepdims=True) * loss
        return F.mean(loss)
