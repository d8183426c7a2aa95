"""Searching by generating (SGNAS, Huang & Chu, CVPR 2021): one generator for every budget.

A small MLP (``generator_model.GeneratorNet``) maps a normalised budget ``tau`` (0 = the cheapest architecture's
cost, 1 = the dearest's) to per-label distributions. Each step draws ``targets`` budgets stratified over the
trained range (the last one at its top, the run's own budget) and, per budget, ``samples`` architectures from
the generated distribution *conditioned on that budget* (so every draw fits it). The loss per budget is

    - mean_k adv_k * log q_tau(a_k)  +  cost_weight * penalty(E_tau[cost] - tau)  -  entropy_weight * H

with ``adv_k`` the objective minus the mean of the other draws for the same budget (leave-one-out: rewards
depend on the budget, so a baseline shared across budgets would mostly measure the budget), scaled by the
moving root mean square of the advantages (``baseline_decay``); ``log q`` is the exact score of the conditioned
distribution. ``E_tau[cost]`` is the expected (normalised) cost under the generated, unconditioned distribution,
exact and differentiable for additive and gated cost models; ``penalty`` is SGNAS's: squared distance beyond a
``tolerance`` band, ``over_penalty`` times heavier above the budget. Gradients flow through the MLP by hand
(numpy), Adam by default.

The budget bounds what may be evaluated, so the generator is trained for budgets from the cheapest cost up to
the run's target (up to the dearest cost without a target). The result is the best architecture evaluated (the
generator's own pick for the run's budget included) and ``artifacts["generator.npz"]``, which
``main_agent: generate`` reads to answer other budgets without a new search.
"""

from dataclasses import dataclass
from typing import Annotated, Any, List, Mapping, Tuple

import numpy as np

from core.errors import ConfigError
from core.registries import SEARCH_STRATEGIES
from core.typed import NonNegativeFloat, PositiveFloat, PositiveInt, Probability, Range
from search_space.choices import SearchSpaceChoices
from search_strategy.base import BaseSearchStrategy, Budget, Evaluate, Progress, SearchResult
from search_strategy.generator_model import GeneratorNet, TrainedGenerator
from search_strategy.numpy_optim import RunningScale
from search_strategy.policy import ArchPolicy, Conditioned, additive_view, entropy_grad, expected_cost, value_costs
from search_strategy.reinforce import PolicyGradientParams


@dataclass(frozen=True)
class GeneratorParams(PolicyGradientParams):
    """Architecture-generator config section; at most ``steps * targets * samples + 1`` evaluations."""

    #: generator updates
    steps: PositiveInt = 60
    #: budgets per update: ``targets - 1`` stratified over the trained range, plus its top (the run's budget)
    targets: Annotated[int, Range(ge=2)] = 4
    #: architectures drawn per budget (their mutual leave-one-out mean is each one's baseline)
    samples: Annotated[int, Range(ge=2)] = 2
    #: hidden units of the generator
    hidden: PositiveInt = 32
    lr: PositiveFloat = 0.02
    #: weight of the penalty keeping the generated expected cost at the requested budget
    cost_weight: NonNegativeFloat = 20.0
    #: how much heavier an expected cost above the budget weighs than one below it
    over_penalty: Annotated[float, Range(ge=1)] = 4.0
    #: half-width of the band around the budget (a fraction of the cost range) with no penalty
    tolerance: Probability = 0.02


@SEARCH_STRATEGIES.register("architecture_generator")
class ArchitectureGeneratorSearch(BaseSearchStrategy):
    """Trains a budget -> architecture-distribution generator by policy gradient and an exact cost penalty."""

    Params = GeneratorParams

    def search(
        self,
        choices: SearchSpaceChoices,
        evaluate: Evaluate,
        budget: Budget,
        rng: np.random.Generator,
        progress: Progress | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Train the generator over the budgets the run admits; return the best arch and the generator."""
        p = self.params
        tracker = self.tracker(evaluate, budget, progress)
        model = additive_view(choices, budget)
        if model is None:
            raise ConfigError(
                "search_strategy_agent: architecture_generator maps budgets to architectures and needs a cost; "
                "give the search a cost model (hardware.info_metric)"
            )
        low, high = float(model.min_cost()), float(model.max_cost())
        if not high > low:
            raise ConfigError(f"search_strategy_agent: architecture_generator: every architecture costs {low:g}")
        top = min(float(budget.target), high) if budget.constrained else high
        if top < low:
            self.sample_in_budget(choices, budget, rng, tracker)  # raises the budget's one-line error
        policy = ArchPolicy(choices)
        base, costs = value_costs(choices, model)
        net = GeneratorNet.init(policy.size, p.hidden, rng)
        optimizer, scale = p.make_optimizer(), RunningScale(p.baseline_decay)
        weights, span, tau_top = net.flat(), high - low, (top - low) / (high - low)
        for step in range(p.steps):
            # stratified over the range, the last at its top: the run's own budget is always trained
            taus = np.append((np.arange(p.targets - 1) + rng.random(p.targets - 1)) / (p.targets - 1), 1.0) * tau_top
            theta, cache = net.forward(taus)
            probs = policy.probabilities(theta)
            g_z = [np.zeros_like(pl) for pl in probs]
            draws = []
            for j, tau in enumerate(taus):
                pj = [pl[j] for pl in probs]
                drawn, dist = self._draw(pj, base, costs, low + tau * span, budget, policy, rng)
                scores = np.array([tracker.evaluate(policy.arch(d), step)["metrics"][p.objective] for d in drawn])
                keep = np.isfinite(scores)
                drawn, scores = [d for d, k in zip(drawn, keep) if k], scores[keep]
                if len(drawn) >= 2:
                    loo = (scores.sum() - scores) / (len(scores) - 1)
                    draws.append((j, drawn, scores - loo, dist))
                self._cost_grad(g_z, j, pj, tau, model, choices, costs, low, span)
                if p.entropy_weight > 0:
                    for gl, hl in zip(g_z, entropy_grad(pj)[1]):
                        gl[j] -= p.entropy_weight * hl / p.targets
            if draws and p.normalize_advantages:
                scaled = scale(np.concatenate([adv for _, _, adv, _ in draws]))
                sizes = np.cumsum([0] + [len(adv) for _, _, adv, _ in draws])
                draws = [(j, d, scaled[a:b], c) for (j, d, _, c), a, b in zip(draws, sizes[:-1], sizes[1:])]
            for j, drawn, adv, dist in draws:
                for label, ql in enumerate(dist.marginals()):
                    g = g_z[label][j]
                    g += float(adv.mean()) * ql / p.targets
                    np.add.at(g, [a[label] for a in drawn], -adv / (len(drawn) * p.targets))
            weights = optimizer.step(weights, net.backward(cache, policy.param_grad(g_z)))
            net.set_flat(weights)
        info = {"objective": p.objective, "steps": p.steps, "evaluations": len(tracker)}
        generator = TrainedGenerator(choices, budget.metric, model, (low, top), net, info)
        final = Budget(budget.metric or "cost", top, budget.cost, budget.additive)
        tracker.evaluate(generator.generate(final, rng, p.repair_samples), p.steps)
        result = tracker.result()
        result.artifacts["generator.npz"] = generator.to_bytes()
        return result

    def _draw(
        self,
        probs: List[np.ndarray],
        base: float,
        costs: List[np.ndarray],
        target: float,
        budget: Budget,
        policy: ArchPolicy,
        rng: np.random.Generator,
    ) -> Tuple[List[List[int]], Conditioned]:
        """``samples`` draws of the generated distribution conditioned on ``target`` (and the run's budget)."""
        dist = Conditioned(probs, base, costs, target)

        def fits(indices: List[int]) -> bool:
            cost = budget.cost_of(policy.arch(indices))
            return cost <= target and budget.allows(cost)

        drawn = [dist.sample(rng, fits, self.params.max_sample_tries) for _ in range(self.params.samples)]
        return [d for d in drawn if d is not None], dist

    def _cost_grad(
        self,
        g_z: List[np.ndarray],
        j: int,
        probs: List[np.ndarray],
        tau: float,
        model: Any,
        choices: SearchSpaceChoices,
        costs: List[np.ndarray],
        low: float,
        span: float,
    ) -> None:
        """Add the budget-tracking penalty's gradient w.r.t. budget ``j``'s value logits to ``g_z``."""
        p = self.params
        expected, d_probs = expected_cost(probs, model, choices, costs)
        d = (expected - low) / span - tau
        slope = 2.0 * p.over_penalty * max(d - p.tolerance, 0.0) - 2.0 * max(-d - p.tolerance, 0.0)
        if slope == 0.0 or p.cost_weight == 0.0:
            return
        for gl, pl, dl in zip(g_z, probs, d_probs):
            dl = dl / span
            gl[j] += p.cost_weight * slope / p.targets * pl * (dl - pl @ dl)
