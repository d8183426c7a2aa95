"""REINFORCE over per-label logits (ENAS / ProxylessNAS / MnasNet style controllers without an RNN).

Each step draws ``batch`` architectures from the policy *conditioned on the budget* (``policy.Conditioned``:
every label sampled from its own distribution with the run's rng, jointly restricted to ``cost <= target``), so
no draw is over budget and none is blindly rejected; it scores them (the tracker caches, so drawing an
architecture again costs no evaluation) and moves the logits along the exact score of the conditioned policy,
``onehot(a_l) - q_l`` (``q_l``: the label's conditioned marginal), weighted by the advantage over a moving-average
baseline. The result is the best architecture evaluated, the policy's most probable in-budget one included.
"""

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, Mapping

import numpy as np

from core.errors import ConfigError
from core.registries import SEARCH_STRATEGIES
from core.typed import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from search_space.choices import SearchSpaceChoices
from search_strategy.base import BaseSearchStrategy, Budget, Evaluate, Progress, SearchParams, SearchResult
from search_strategy.numpy_optim import Optimizer, RewardBaseline
from search_strategy.policy import (
    ArchPolicy,
    Conditioned,
    additive_view,
    entropy_grad,
    most_probable_in_budget,
    value_costs,
)

#: a decay or momentum: 0 <= x < 1
Decay = Annotated[float, Range(ge=0, lt=1)]
#: a cost exponent of the multiplicative reward
Exponent = Annotated[float, Range(ge=-1, le=1)]


@dataclass(frozen=True)
class PolicyGradientParams(SearchParams):
    """The optimiser and baseline settings shared by the policy-gradient strategies."""

    #: optimiser of the logits (``momentum`` applies to sgd, ``beta1`` / ``beta2`` to adam)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PositiveFloat = 0.1
    momentum: Decay = 0.0
    beta1: Decay = 0.9
    beta2: Decay = 0.999
    #: moving-average baseline ``b <- decay * b + (1 - decay) * mean reward``
    baseline_decay: Decay = 0.9
    #: divide advantages by the moving standard deviation of the rewards (scale-free step sizes)
    normalize_advantages: bool = True
    #: weight of the policy's entropy added to the objective (exploration)
    entropy_weight: NonNegativeFloat = 0.0
    #: in-budget candidates drawn to repair a most probable architecture that is over budget
    repair_samples: PositiveInt = 256

    def make_optimizer(self) -> Optimizer:
        """The configured optimiser."""
        return Optimizer(self.optimizer, self.lr, self.beta1, self.beta2, self.momentum)


@dataclass(frozen=True)
class ReinforceParams(PolicyGradientParams):
    """REINFORCE config section; at most ``steps * batch + 1`` evaluations.

    Reward = objective * (cost / T) ** w with ``T = reward_target`` (default: the budget's target) and
    ``w = cost_exponent`` when cost <= T, ``over_exponent`` above (MnasNet; ProxylessNAS uses one w for both).
    A negative w lowers the reward of architectures dearer than T and raises that of cheaper ones; 0 (the
    default) makes the reward the objective alone. Meant for a positive objective such as accuracy.
    """

    #: policy updates
    steps: PositiveInt = 50
    #: architectures drawn per update
    batch: PositiveInt = 8
    cost_exponent: Exponent = 0.0
    over_exponent: Exponent = 0.0
    reward_target: PositiveFloat | None = None


def score_grads(policy: ArchPolicy, batch: List[List[int]], adv: np.ndarray, q: List[np.ndarray]) -> List[np.ndarray]:
    """Per label ``mean_i adv_i * (onehot(a_il) - q_l)``: the REINFORCE ascent direction on the value logits."""
    out = []
    for label, ql in enumerate(q):
        g = -float(adv.mean()) * ql
        np.add.at(g, [a[label] for a in batch], adv / len(batch))
        out.append(g)
    return out


@SEARCH_STRATEGIES.register("reinforce")
class ReinforceSearch(BaseSearchStrategy):
    """Policy gradient on independent per-label logits, every draw within budget."""

    Params = ReinforceParams

    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """``steps`` updates of ``batch`` in-budget draws, then the most probable in-budget architecture."""
        p = self.params
        tracker = self.tracker(evaluate, budget, progress)
        reference = self._reference(budget)
        policy = ArchPolicy(choices)
        base, costs = 0.0, [np.zeros(len(c)) for c in choices.values()]  # no target: nothing to condition on
        model = additive_view(choices, budget) if budget.constrained else None
        if model is not None:
            base, costs = value_costs(choices, model)
        theta = np.zeros(policy.size)
        optimizer, baseline = p.make_optimizer(), RewardBaseline(p.baseline_decay, p.normalize_advantages)
        for step in range(p.steps):
            probs = policy.probabilities(theta)
            dist = Conditioned(probs, base, costs, budget.target)
            if not dist.feasible:
                self.sample_in_budget(choices, budget, rng, tracker)  # raises the budget's one-line error
            batch = []
            for _ in range(p.batch):
                drawn = dist.sample(rng, lambda i: budget.within(policy.arch(i)), p.max_sample_tries)
                if drawn is not None:
                    batch.append(drawn)
            if not batch:
                break
            rewards = np.array([self.reward(tracker.evaluate(policy.arch(i), step), reference) for i in batch])
            keep = np.isfinite(rewards)  # a NaN objective teaches nothing
            batch, rewards = [a for a, k in zip(batch, keep) if k], rewards[keep]
            if not batch:
                continue
            adv = baseline.advantages(rewards)
            ascent = score_grads(policy, batch, adv, dist.marginals())
            if p.entropy_weight > 0:
                _, h_grads = entropy_grad(probs)
                ascent = [g + p.entropy_weight * h for g, h in zip(ascent, h_grads)]
            theta = optimizer.step(theta, -policy.param_grad(ascent))
        final = policy.hints(policy.probabilities(theta))
        best = most_probable_in_budget(choices, final, budget, rng, p.repair_samples, p.max_sample_tries)
        tracker.evaluate(best, p.steps)
        result = tracker.result()
        result.artifacts["policy.json"] = (json.dumps({"probabilities": final}, indent=2) + "\n").encode()
        return result

    def _reference(self, budget: Budget) -> float | None:
        """The reward's reference cost T, checked when the reward uses one."""
        p = self.params
        if p.cost_exponent == 0.0 and p.over_exponent == 0.0:
            return None
        reference = p.reward_target if p.reward_target is not None else budget.target
        if reference is None or budget.cost is None:
            raise ConfigError(
                "search_strategy.reward_target: a cost exponent needs a cost and a reference cost; set reward_target "
                "(or hardware.target_hc) with hardware.info_metric"
            )
        return float(reference)

    def reward(self, entry: Dict[str, Any], reference: float | None) -> float:
        """The objective, times ``(cost / T) ** w`` when a reference cost T is used."""
        value = float(entry["metrics"][self.params.objective])
        if reference is None:
            return value
        cost = float(entry["cost"])
        w = self.params.cost_exponent if cost <= reference else self.params.over_exponent
        return value * math.pow(max(cost, 1e-300) / reference, w) if w else value
