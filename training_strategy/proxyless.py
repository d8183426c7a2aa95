"""ProxylessNAS training (Cai, Zhu, Han, "ProxylessNAS: Direct Neural Architecture Search on Target Task and
Hardware", ICLR 2019, arXiv:1812.00332): path-level binarisation, one path in memory per weight step.

Weights train on one part of the train split (the loop's steps), architecture parameters on the other
(``arch_portion``). Each weight step trains ONE path drawn from the alphas' distribution (``softmax(alpha)``
per layer): only its candidates are computed, as in single-path training. Before it, every ``arch_every``
steps (after ``arch_warmup_epochs``), an architecture step on an architecture batch, with one of two
estimators of the alphas' gradient:

- ``binary`` (ProxylessNAS's two-path estimate): per layer two candidates drawn without replacement by their
  probabilities, the active one of the two by the probabilities renormalised over the pair; binary gates
  ``g`` (1 on the active, 0 on the other) weight the two outputs, the other one detached (computed for its
  gate's gradient, no gradient flows into it). With ``p`` the softmax over the pair's alphas,
  ``dL/d alpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` for the two; after the Adam step the pair's alphas
  are shifted so that their total ``exp`` mass, hence every other candidate's probability, is unchanged
  (the reference implementation's ``rescale_updated_arch_param``). Layer choices only.
- ``reinforce``: ``arch_samples`` paths drawn from the distribution, each run forward on the same batch;
  ``dL/d alpha = mean_i (L_i - b) d log P(path_i) / d alpha`` with ``b`` a moving average of the mean loss
  (NNablaNAS's ProxylessNAS searcher: 10 paths). Every decision kind, input choices included
  (``training_strategy/sampling.py``). The paths' forward passes run in parallel threads
  (``reward_threads``): their graphs normalise with batch statistics but update no running statistics, so
  they share no state and give the same losses in any order.

The loss is the run's criterion, so ``hardware_constrained`` adds its expected-cost penalty on
``softmax(alpha)`` through the lookup table, whose gradient reaches every alpha directly (added to the
estimate). BatchNorm uses batch statistics in the architecture step. The architecture step computes no
weight gradient and the weight step no alpha gradient. Adam's state, the architecture iterator, the
generator and the baseline are checkpointed.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Literal, Mapping, Tuple

import nnabla as nn
import nnabla.solvers as S
import numpy as np

from core.errors import ConfigError
from core.registries import TRAINING_STRATEGIES
from core.run_state import restore_rng
from core.typed import NonNegativeFloat, NonNegativeInt, OpenFraction, PositiveFloat, PositiveInt, Probability
from dataset.base import ArrayDataset, train_iterator
from search_space.base_supernet import BaseSupernet
from search_space.choices import Subset
from search_space.layers import keep_statistics
from search_space.mutables import Decision, split_weights
from training_strategy.base import BaseTrainingStrategy, StrategyContext
from training_strategy.differentiable import (
    ArchOptimizerConfig,
    graph_leaves,
    no_grad_for,
    release,
    set_need_grad,
    split_for_alphas,
)
from training_strategy.sampling import draw_without_replacement, sample_path


@dataclass(frozen=True)
class ProxylessArchOptimizerConfig(ArchOptimizerConfig):
    """Adam on the architecture parameters, ProxylessNAS's defaults (lr 1e-3, beta1 0, beta2 0.999, no decay).

    ``beta1 = 0``: a candidate not sampled gets no gradient, so without momentum it does not move.
    """

    lr: PositiveFloat = 1e-3
    beta1: Probability = 0.0
    weight_decay: NonNegativeFloat = 0.0


@dataclass(frozen=True)
class ProxylessParams:
    """ProxylessNAS config section."""

    #: binary = the two-path binary-gate gradient; reinforce = REINFORCE over ``arch_samples`` sampled paths
    estimator: Literal["binary", "reinforce"] = "binary"
    #: reinforce: paths sampled (and run forward) per architecture step
    arch_samples: PositiveInt = 10
    #: reinforce: threads evaluating the sampled paths' losses at once (null: one per CPU core)
    reward_threads: PositiveInt | None = None
    #: reinforce: weight of the previous baseline in the moving average of the mean loss
    baseline_decay: Probability = 0.9
    #: share of the train split that architecture parameters learn on (the rest trains weights)
    arch_portion: OpenFraction = 0.5
    #: epochs of weight training before the architecture parameters start to move
    arch_warmup_epochs: NonNegativeInt = 0
    #: an architecture step before every ``arch_every``-th weight step
    arch_every: PositiveInt = 1
    arch_optimizer: ProxylessArchOptimizerConfig = field(default_factory=ProxylessArchOptimizerConfig)


@TRAINING_STRATEGIES.register("proxyless")
class Proxyless(BaseTrainingStrategy):
    """One sampled path per weight step; architecture steps by binary gates or REINFORCE."""

    Params = ProxylessParams
    learns_arch_parameters = True

    def __init__(self, params: ProxylessParams):
        super().__init__(params)
        self.baseline: float | None = None
        self.pairs: Dict[str, Tuple[int, ...]] = {}
        self._gates: Dict[str, nn.Variable] = {}
        self._arch_graph: Tuple[Hashable, Any] | None = None
        self.threads = min(params.arch_samples, params.reward_threads or os.cpu_count() or 1)

    def split_train(self, train: ArrayDataset, rng: np.random.Generator) -> Tuple[ArrayDataset, ArrayDataset]:
        """Weights on one part of the train split, alphas on the other (stratified, stable)."""
        return split_for_alphas(train, self.params.arch_portion, rng)

    def setup(self, supernet: BaseSupernet, context: StrategyContext) -> None:
        """Sample mode, the alphas' Adam, and the iterator over the architecture split."""
        if context.arch_data is None:
            raise ConfigError("the proxyless strategy needs the architecture split (split_train)")
        self.context, self.rng = context, context.rng
        self.decisions = supernet.decisions()
        inputs = [label for label, d in self.decisions.items() if isinstance(d.choice, Subset)]
        if self.params.estimator == "binary" and inputs:
            raise ConfigError(
                f"training_strategy.estimator: binary gates learn layer choices only, and {inputs[0]!r} is an "
                "input choice; use estimator: reinforce"
            )
        p = self.params.arch_optimizer
        self.solver = S.Adam(p.lr, p.beta1, p.beta2)
        self.alphas = supernet.arch_parameters()
        self.solver.set_parameters(self.alphas)
        self.arch_iter = train_iterator(context.arch_data, context.batch_size, self.rng, context.augment)
        supernet.set_mode("sample")
        self._sample_path(supernet)

    # ----- the weight step: one path from softmax(alpha) ----------------------------------------------
    def before_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """An architecture step when due, then the weight step's path drawn from the alphas."""
        p = self.params
        set_need_grad(self.alphas.values(), True)
        if epoch >= p.arch_warmup_epochs and step % p.arch_every == 0:
            self.arch_step(supernet)
        set_need_grad(self.alphas.values(), False)  # the weight step computes no alpha gradient
        self._sample_path(supernet)

    def after_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """The alphas need their gradient again (the weight step did not compute it)."""
        set_need_grad(self.alphas.values(), True)

    def _sample_path(self, supernet: BaseSupernet) -> Dict[str, np.ndarray]:
        """Sample mode on a path drawn from the alphas; returns the draws' scores."""
        indices, scores = sample_path(self.decisions, self.rng)
        supernet.set_mode("sample")
        for label, d in self.decisions.items():
            d.index = indices[label]
        return scores

    # ----- the architecture step ----------------------------------------------------------------------
    def arch_step(self, supernet: BaseSupernet) -> None:
        """One update of the alphas on an architecture batch (``estimator``), then back to sample mode."""
        batch = self.arch_iter.next()
        self.solver.zero_grad()
        if self.params.estimator == "binary":
            old = self.binary_gradient(supernet, batch)
        else:
            self.reinforce_gradient(supernet, batch)
        self.solver.weight_decay(self.params.arch_optimizer.weight_decay)
        self.solver.update()
        if self.params.estimator == "binary":
            self._rescale(old)
        supernet.set_mode("sample")

    def _graph(self, supernet: BaseSupernet, key: Hashable) -> Tuple[nn.Variable, nn.Variable, nn.Variable]:
        if self._arch_graph is None or self._arch_graph[0] != key:
            self._arch_graph = None  # the previous graph is freed before the next is built
            supernet.training = True
            x, t, _, loss = self.context.loss_graph(
                supernet, self.context.batch_size, self.context.arch_data.images.shape[1:]
            )
            self._arch_graph = (key, (x, t, loss))
            exclude = list(self.alphas.values()) + list(self._gates.values())
            self._graph_weights = graph_leaves(loss, exclude=exclude)
        return self._arch_graph[1]

    def _run(self, supernet: BaseSupernet, key: Hashable, batch: Tuple[np.ndarray, np.ndarray]) -> float:
        """Forward and backward of the architecture graph ``key`` on ``batch`` (no weight gradient); its loss."""
        x, t, loss = self._graph(supernet, key)
        x.d, t.d = batch
        with no_grad_for(self._graph_weights):
            loss.forward(clear_no_need_grad=True)
            loss.backward(clear_buffer=True)
        release(loss)
        return float(loss.d)

    def _pair(self, decision: Decision) -> Tuple[int, ...]:
        """``(active, other)``: two candidates by their probabilities, the active one by the pair's (one if only
        one exists)."""
        alpha = decision.ensure_alpha().d.astype(np.float64)
        if alpha.size == 1:
            return (0,)
        pair, _ = draw_without_replacement(alpha, 2, self.rng)
        first, _ = draw_without_replacement(alpha[pair], 1, self.rng)
        return (pair[0], pair[1]) if first[0] == 0 else (pair[1], pair[0])

    def _gate(self, decision: Decision) -> List[Tuple[Any, ...]]:
        """The gate hook: the active candidate with gate 1, the other detached with gate 0."""
        pair = self.pairs[decision.label]
        if len(pair) == 1:
            return [(pair[0], None)]
        g = split_weights(self._gates[decision.label])
        return [(pair[0], g[0]), (pair[1], g[1], True)]

    def binary_gradient(self, supernet: BaseSupernet, batch: Tuple[np.ndarray, np.ndarray]) -> Dict[str, np.ndarray]:
        """Add the two-path estimate to the alphas' gradients; returns the pairs' alphas before the update."""
        self.pairs = {label: self._pair(d) for label, d in self.decisions.items()}
        for label, pair in self.pairs.items():
            if len(pair) == 2 and label not in self._gates:
                self._gates[label] = nn.Variable.from_numpy_array(np.array([1.0, 0.0], np.float32), need_grad=True)
        for g in self._gates.values():
            g.grad.zero()
        supernet.set_mode("gates", self._gate)
        self._run(supernet, ("binary", tuple(self.pairs.values())), batch)
        old = {}
        for label, pair in self.pairs.items():
            if len(pair) < 2:
                continue
            alpha, idx = self.alphas[label], list(pair)
            a = alpha.d[idx].astype(np.float64)
            p = np.exp(a - a.max())
            p /= p.sum()
            dg = self._gates[label].g.astype(np.float64)
            grad = alpha.g.astype(np.float64)
            # d p_j / d alpha_i = p_j (delta_ij - p_i) over the pair
            grad[idx] += (np.diag(p) - np.outer(p, p)) @ dg
            alpha.g = grad
            old[label] = alpha.d[idx].copy()
        return old

    def _rescale(self, old: Mapping[str, np.ndarray]) -> None:
        """Shift each pair's updated alphas so their ``exp`` mass, hence every other probability, is unchanged."""
        for label, before in old.items():
            alpha, idx = self.alphas[label], list(self.pairs[label])
            new = alpha.d.astype(np.float64)
            offset = np.logaddexp.reduce(new[idx]) - np.logaddexp.reduce(before.astype(np.float64))
            new[idx] -= offset
            alpha.d = new

    def reinforce_gradient(self, supernet: BaseSupernet, batch: Tuple[np.ndarray, np.ndarray]) -> None:
        """Set the alphas' gradients to the REINFORCE estimate over ``arch_samples`` paths (plus the direct
        gradient of the criterion's cost penalty, averaged).

        The paths' losses are forward passes of separate graphs that share no state (batch statistics without a
        running-average update, ``keep_statistics``), run in ``reward_threads`` threads: nnabla's CPU kernels
        release the GIL, and each loss is the same whatever the order. The backward passes (the penalty's
        gradient, accumulated into the alphas) run one after another.
        """
        n = self.params.arch_samples
        graphs, scores = [], []
        supernet.training = True
        with keep_statistics(supernet):
            for _ in range(n):
                scores.append(self._sample_path(supernet))
                x, t, _, loss = self.context.loss_graph(
                    supernet, self.context.batch_size, self.context.arch_data.images.shape[1:]
                )
                x.d, t.d = batch
                graphs.append(loss)
        for loss in graphs:  # no weight gradient: a graph's parameters are its own Variables, dropped with it
            set_need_grad(graph_leaves(loss, exclude=self.alphas.values()), False)
        forward = lambda loss: loss.forward(clear_no_need_grad=True)  # noqa: E731
        if self.threads > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(forward, graphs))
        else:
            for loss in graphs:
                forward(loss)
        losses = []
        for loss in graphs:
            losses.append(float(loss.d))
            loss.backward(clear_buffer=True)
        mean = float(np.mean(losses))
        base = mean if self.baseline is None else self.baseline
        for label, alpha in self.alphas.items():
            grad = alpha.g.astype(np.float64) / n  # the penalty's direct gradient, summed over the passes
            for loss, score in zip(losses, scores):
                grad += (loss - base) * score[label] / n
            alpha.g = grad
        decay = self.params.baseline_decay
        self.baseline = mean if self.baseline is None else decay * self.baseline + (1.0 - decay) * mean

    # ----- resumable state ---------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Adam state of the alphas, the architecture iterator, the generator, the REINFORCE baseline."""
        states = {
            k: {"t": int(s.t), **{n: v.d.copy() for n, v in s.pstate.items()}}
            for k, s in self.solver.get_states().items()
        }
        return {
            "solver": states,
            "iterator": self.arch_iter.state_dict(),
            "rng": self.rng.bit_generator.state,
            "baseline": self.baseline,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict`` output."""
        current = self.solver.get_states()
        for k, s in current.items():
            saved = state["solver"][k]
            for n, v in s.pstate.items():
                v.d = saved[n]
            s.t = int(saved["t"])
        self.solver.set_states(current)
        self.arch_iter.load_state_dict(state["iterator"])
        restore_rng(self.rng, state["rng"], "proxyless strategy")
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
