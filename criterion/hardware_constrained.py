"""Hardware-constrained criterion: the task loss plus a differentiable expected cost (FBNet-style).

The expected cost of a supernet under its architecture distribution is, for an additive cost model,

    E[cost] = base + sum over labels of softmax(alpha_label) . cost_vector_label

(``cost_vector_label`` in the order of ``decision.choice.values``), which is exact because the cost is a
sum of per-label terms and the labels are independent under the softmax distributions. It is built
from nnabla functions, so the loss's gradient reaches every ``alpha``.

Two forms combine it with the task loss (``CE``, optionally label-smoothed):

- ``multiplicative`` (FBNet: Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable
  Neural Architecture Search", CVPR 2019, arXiv:1812.03443; the latency-aware loss
  ``L(a, w_a) = CE(a, w_a) * alpha * log(LAT(a)) ** beta`` with ``alpha = 0.2`` and ``beta = 0.6``):

  * without a target, FBNet verbatim: ``loss = CE * alpha_coef * log(E[cost]) ** beta``. ``log`` of a raw
    cost depends on its unit and is negative below 1, so every architecture must cost more than 1
    (a one-line ConfigError otherwise);
  * with a target ``T`` (``hardware.target_hc``): ``loss = CE * alpha_coef * g(E[cost] / T) ** beta`` with
    ``g(r) = log(1 + (e - 1) * r)``. ``g`` is the log-affine map of the cost ratio with ``g(0) = 0`` and
    ``g(1) = 1``: positive for every positive cost, exactly 1 at the target (so the loss there is
    ``alpha_coef * CE``), growing like ``log`` above it as in FBNet, and independent of the cost's unit
    (FLOPs or MFLOPs, ms or s give the same loss). The suggested ``(log(cost) / log(T)) ** beta`` was not
    used: it is undefined or negative when ``T <= 1`` or a cost is below 1 (latency in seconds) and
    changes with the unit (its slope at the target is ``beta / log(T)``).

  ``alpha_coef`` scales the whole loss, as in FBNet: when the same criterion trains the weights, an SGD
  learning rate is effectively multiplied by ``alpha_coef * g ** beta`` (Adam is nearly invariant to it).
- ``hinge``: ``loss = CE + hinge_weight * max(0, E[cost] / T - 1)``: no pressure below the target, a
  linear one (in units of the target) above it. It needs a target.

The criterion reads ``supernet`` (a ``Searchable``), ``cost_model`` (the cost model of the budget
metric) and ``target_hc`` (float or None) from the keyword context (``target`` would collide with the
positional target labels). Without a supernet (retraining a fixed network, evaluation) the penalty is a
constant, so the task loss alone is returned.

Input-choice (Subset-valued) labels are accepted only when their own costs are all zero (they then add
nothing): a subset's cost is not expressible through per-input alphas, so a costed input choice is a
one-line ArchitectureError naming the label. What an input choice gates (a ``GatedCost``: cell edges that run
only when their node takes them) is expressible, and counted (see ``expected_cost``).
"""

import math
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np

from core.errors import ArchitectureError, ConfigError
from core.registries import CRITERIA
from core.typed import NonNegativeFloat, PositiveFloat, Range
from criterion.base import BaseCriterion
from criterion.cross_entropy import CrossEntropy, LabelSmoothing, LabelSmoothingParams
from search_space.choices import Subset
from search_space.cost_model import AdditiveCost, CostModel, GatedCost
from search_space.mutables import input_weights, split_weights

NAME = "hardware_constrained"


def cost_vectors(supernet: Any, cost_model: AdditiveCost) -> Tuple[float, List[Tuple[Any, np.ndarray]]]:
    """``(lower, [(decision, residual costs), ...])`` with ``E[cost] = lower + sum(softmax(alpha) . residual)``.

    Each label's cheapest cost is moved into ``lower`` (so ``lower`` is the cheapest architecture's cost
    and the residuals are >= 0, which keeps float32 sums accurate); labels whose costs are all equal are
    left out (their alpha cannot change the cost). Cost-model labels the supernet does not have, values
    without a cost, and costed input choices are ArchitectureErrors.
    """
    decisions = supernet.decisions()
    unknown = [label for label in cost_model.table if label not in decisions]
    if unknown:
        raise ArchitectureError(f"{NAME}: cost model label {unknown[0]!r} is not a decision of the supernet")
    lower = float(cost_model.base)
    rows: List[Tuple[Any, np.ndarray]] = []
    for label, decision in decisions.items():
        row = cost_model.table.get(label)
        if row is None:  # labels missing from the cost model cost nothing
            continue
        if isinstance(decision.choice, Subset):
            if any(cost != 0.0 for cost in row.values()):
                raise ArchitectureError(
                    f"{NAME}: input choice {label!r} has non-zero costs, which per-input alphas cannot express"
                )
            continue
        missing = [v for v in decision.choice.values if v not in row]
        if missing:
            raise ArchitectureError(f"{NAME}: label {label!r} has no cost for value {missing[0]!r}")
        costs = np.asarray([row[v] for v in decision.choice.values], np.float64)
        low = float(costs.min())
        lower += low
        if costs.max() > low:
            rows.append((decision, costs - low))
    return lower, rows


def _expected(lower: float, rows: List[Tuple[Any, np.ndarray]]) -> nn.Variable:
    if not rows:
        return nn.Variable.from_numpy_array(np.asarray(lower, np.float32), need_grad=False)
    for decision, costs in rows:
        alpha = decision.ensure_alpha()
        if alpha.shape != costs.shape:
            raise ArchitectureError(
                f"{NAME}: label {decision.label!r} has alpha of shape {alpha.shape} for {costs.size} values"
            )
    probs = [F.softmax(decision.ensure_alpha(), axis=0) for decision, _ in rows]
    p = probs[0] if len(probs) == 1 else F.concatenate(*probs, axis=0)
    c = nn.Variable.from_numpy_array(np.concatenate([costs for _, costs in rows]).astype(np.float32), need_grad=False)
    return F.sum(p * c) + lower


def _gated(supernet: Any, cost_model: GatedCost) -> nn.Variable | None:
    """The gated terms' expected cost: per term, its input's weight times ``softmax(alpha_label) . costs``."""
    decisions = supernet.decisions()
    weights: Dict[str, List[nn.Variable]] = {}
    parts = []
    for t in cost_model.terms:
        if t.gate not in decisions or t.label not in decisions:
            missing = t.gate if t.gate not in decisions else t.label
            raise ArchitectureError(f"{NAME}: cost model label {missing!r} is not a decision of the supernet")
        gate, op = decisions[t.gate], decisions[t.label]
        if t.gate not in weights:
            weights[t.gate] = split_weights(input_weights(gate))
        costs = np.asarray([t.costs[v] for v in op.choice.values], np.float32)
        c = nn.Variable.from_numpy_array(costs, need_grad=False)
        parts.append(weights[t.gate][t.index] * F.sum(F.softmax(op.ensure_alpha(), axis=0) * c))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else F.add_n(*parts)


def expected_cost(supernet: Any, cost_model: CostModel) -> nn.Variable:
    """``E[cost]`` (scalar Variable) of ``supernet``'s architecture distribution ``softmax(alpha)`` per label.

    A gated term (an operation that runs only while its input is chosen) counts with the weight the supernet
    gives that input in full mode (``k * softmax(alpha)`` for k of n inputs, ``sigmoid(alpha)`` for any of n):
    the expected cost of the mixture the supernet computes. Differentiable with respect to every alpha
    (created with ``ensure_alpha`` if missing); ``forward()`` it to read the value.
    """
    gated = isinstance(cost_model, GatedCost)
    cost = _expected(*cost_vectors(supernet, cost_model.additive if gated else cost_model))
    extra = _gated(supernet, cost_model) if gated else None
    return cost if extra is None else cost + extra


@dataclass(frozen=True)
class HardwareConstrainedParams:
    """Form of the cost penalty and its coefficients; ``smoothing`` of the task cross-entropy."""

    form: Literal["multiplicative", "hinge"] = "multiplicative"
    #: FBNet's alpha: overall scale of the multiplicative loss
    alpha_coef: PositiveFloat = 0.2
    #: FBNet's beta: exponent of the (normalised) log cost
    beta: PositiveFloat = 0.6
    #: hinge form: weight of ``max(0, E[cost] / target - 1)``
    hinge_weight: NonNegativeFloat = 1.0
    #: label smoothing of the task cross-entropy (0 = plain cross-entropy)
    smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0


@CRITERIA.register(NAME)
class HardwareConstrained(BaseCriterion):
    """Task cross-entropy with a differentiable expected-cost penalty (see the module docstring)."""

    Params = HardwareConstrainedParams

    def __init__(self, params: HardwareConstrainedParams):
        super().__init__(params)
        if params.smoothing > 0:
            self.task: BaseCriterion = LabelSmoothing(LabelSmoothingParams(smoothing=params.smoothing))
        else:
            self.task = CrossEntropy(CrossEntropy.Params())

    def __call__(
        self,
        logits: nn.Variable,
        target: nn.Variable,
        supernet: Any = None,
        cost_model: CostModel | None = None,
        target_hc: float | None = None,
        **context: Any,
    ) -> nn.Variable:
        task = self.task(logits, target)
        if supernet is None:
            return task
        if cost_model is None:
            raise ConfigError(f"criterion {NAME} needs the lookup table's cost model in its context")
        p = self.params
        if target_hc is not None and not (math.isfinite(target_hc) and target_hc > 0):
            raise ConfigError(f"hardware.target_hc: must be a positive number, got {target_hc!r}")
        if p.form == "hinge" and target_hc is None:
            raise ConfigError("criterion.form: hinge needs hardware.target_hc")
        cost, lower = expected_cost(supernet, cost_model), cost_model.min_cost()
        if p.form == "hinge":
            return task + p.hinge_weight * F.relu(cost * (1.0 / target_hc) - 1.0)
        if target_hc is None:
            if lower <= 1.0:
                raise ConfigError(
                    f"criterion.form: multiplicative without hardware.target_hc takes log(cost), which needs "
                    f"every cost > 1 (cheapest: {lower:g}); set hardware.target_hc"
                )
            log_cost = F.log(cost)
        else:
            if lower <= 0.0:
                raise ConfigError(
                    f"criterion {NAME}: the multiplicative form needs positive costs (cheapest: {lower:g})"
                )
            log_cost = F.log(cost * ((math.e - 1.0) / target_hc) + 1.0)
        return task * (p.alpha_coef * F.pow_scalar(log_cost, p.beta))
