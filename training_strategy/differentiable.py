"""Differentiable one-shot training: DARTS (bi-level, first or second order) and Gumbel-softmax (GDAS / FBNet).

Weights train on one part of the train split (the loop's steps), architecture parameters on the other
(``arch_portion``), alternating: before each weight step, one architecture step on an architecture batch.
BatchNorm uses batch statistics in the architecture step, as the DARTS reference does.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, Iterable, Iterator, List, Literal, Mapping, Sequence, Tuple

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np

from core.errors import CheckpointError, ConfigError
from core.registries import TRAINING_STRATEGIES
from core.run_state import restore_rng
from core.typed import NonNegativeFloat, NonNegativeInt, OpenFraction, PositiveFloat, PositiveInt, Probability
from dataset.base import STREAM_VALID, ArrayDataset, split_indices, train_iterator
from search_space.base_supernet import BaseSupernet
from search_space.mutables import Decision, LayerChoice, split_weights, straight_through
from training_strategy.base import BaseTrainingStrategy, StrategyContext
from training_strategy.collapse import CollapseDetector, LabelCandidates


def set_need_grad(variables: Iterable[nn.Variable], need: bool) -> None:
    """Whether passes compute gradients for ``variables`` (nnabla reads ``need_grad`` at every forward and
    backward, so a built graph needs no rebuild; a function none of whose inputs need one is skipped)."""
    for v in variables:
        v.need_grad = need


@contextmanager
def no_grad_for(variables: Sequence[nn.Variable]) -> Iterator[None]:
    """``need_grad = False`` on ``variables`` inside the block (restored after)."""
    saved = [v.need_grad for v in variables]
    set_need_grad(variables, False)
    try:
        yield
    finally:
        for v, need in zip(variables, saved):
            v.need_grad = need


def graph_leaves(output: nn.Variable, exclude: Iterable[nn.Variable] = ()) -> List[nn.Variable]:
    """The Variables without parent that ``output``'s graph reads and that need a gradient (its weights), as the
    graph holds them: a module's parameter enters a graph as its own Variable (sharing data and gradient with the
    one ``get_parameters`` returns, not its ``need_grad``)."""
    skip = {hash(v) for v in exclude}
    found: List[nn.Variable] = []
    leaf = lambda v: v.parent is None and v.need_grad and hash(v) not in skip  # noqa: E731
    output.visit(lambda f: found.extend(v for v in f.inputs if leaf(v)))
    return found


def candidate_kinds(supernet: BaseSupernet) -> Dict[str, LabelCandidates]:
    """Per label of a LayerChoice: its candidates, which are parameter-free and which the derivation excludes.

    Decided from the modules, not from op names: a candidate is parameter-free when its module holds no
    trainable parameter at any position of the label (DARTS's pooling and stride-1 skip, ENAS's identity,
    ProxylessNAS's skip; a stride-2 skip is a factorized reduction, with parameters), excluded when it is a Zero
    op (``is_zero``), which the derivation never picks.
    """
    free: Dict[str, List[bool]] = {}
    zero: Dict[str, List[bool]] = {}
    names: Dict[str, Tuple[str, ...]] = {}
    for site in supernet.mutables():
        m = site.mutable
        if not isinstance(m, LayerChoice):
            continue
        label = m.decision.label
        names[label] = tuple(m.candidate_names)
        found = [not c.get_parameters(grad_only=True) for c in m.candidates]
        free[label] = [a and b for a, b in zip(free.get(label, found), found)]
        zero[label] = [bool(getattr(c, "is_zero", False)) for c in m.candidates]
    return {k: LabelCandidates(names[k], tuple(free[k]), tuple(zero[k])) for k in names}


def split_for_alphas(
    train: ArrayDataset, arch_portion: float, rng: np.random.Generator
) -> Tuple[ArrayDataset, ArrayDataset]:
    """``(weight part, alpha part)`` of the train split: a stratified, stable ``arch_portion`` for the alphas
    (``training_strategy.arch_portion`` of every strategy that learns architecture parameters)."""
    arch_idx, weight_idx = split_indices(
        train.labels[:, 0], arch_portion, int(rng.integers(2**31)), STREAM_VALID, what="arch_portion"
    )
    pick = lambda idx: ArrayDataset(train.images[idx], train.labels[idx], train.pad, train.flip)  # noqa: E731
    return pick(weight_idx), pick(arch_idx)


def release(output: nn.Variable) -> None:
    """Free what ``output``'s graph still holds after its passes (recomputed data that no backward step used up,
    e.g. in the part of the graph that needs no gradient) before the other graph's passes allocate theirs."""
    output.visit(lambda f: [v.data.clear() for v in f.outputs if not v.persistent])


@dataclass(frozen=True)
class ArchOptimizerConfig:
    """Adam on the architecture parameters (DARTS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3)."""

    lr: PositiveFloat = 3e-4
    beta1: Probability = 0.5
    beta2: Probability = 0.999
    weight_decay: NonNegativeFloat = 1e-3


@dataclass(frozen=True)
class CollapseGuardConfig:
    """DARTS+ early stopping (``training_strategy/collapse.py``): after every epoch, count the labels whose most
    probable candidate (Zero aside) has no parameters."""

    #: the search has collapsed when this many watched labels are dominated (DARTS+: 2 skips in the normal cell)
    max_parameter_free: PositiveInt = 2
    #: warn = log it and train on; stop = end the weight and architecture training there, then search
    action: Literal["warn", "stop"] = "warn"
    #: fnmatch patterns of the labels watched (DARTS+ watches the normal cell: [normal_*]); null = every label
    labels: Tuple[str, ...] | None = None


@dataclass(frozen=True)
class DifferentiableParams:
    """Differentiable training config section."""

    #: darts = softmax(alpha)-weighted sum of every candidate; gumbel = Gumbel-softmax samples (GDAS / FBNet)
    algorithm: Literal["darts", "gumbel"] = "darts"
    #: DARTS gradient: 1 = first order; 2 = the unrolled second-order approximation (finite differences)
    order: Literal[1, 2] = 1
    #: virtual step size of the second-order approximation (DARTS uses the weight learning rate)
    unrolled_lr: PositiveFloat = 0.05
    #: share of the train split that architecture parameters learn on (the rest trains weights)
    arch_portion: OpenFraction = 0.5
    #: epochs of weight training before the architecture parameters start to move
    arch_warmup_epochs: NonNegativeInt = 0
    arch_optimizer: ArchOptimizerConfig = field(default_factory=ArchOptimizerConfig)
    collapse_guard: CollapseGuardConfig = field(default_factory=CollapseGuardConfig)
    #: Gumbel temperature, annealed exponentially from tau_max to tau_min over the epochs
    tau_max: PositiveFloat = 5.0
    tau_min: PositiveFloat = 0.5
    #: gumbel: straight-through one-hot samples, only the sampled candidate computed (GDAS); else soft (FBNet)
    hard: bool = False


@TRAINING_STRATEGIES.register("differentiable")
class Differentiable(BaseTrainingStrategy):
    """Bi-level training of weights and architecture parameters (alphas)."""

    Params = DifferentiableParams
    learns_arch_parameters = True

    def __init__(self, params: DifferentiableParams):
        super().__init__(params)
        self.epochs = 1
        self.tau = params.tau_max
        self.noise: Dict[str, np.ndarray] = {}
        self._noise_vars: Dict[str, nn.Variable] = {}
        self._tau_var = nn.Variable.from_numpy_array(np.full(1, params.tau_max, np.float32))
        self._arch_graph: Tuple[Hashable, Any] | None = None
        #: the watched labels' alphas after each epoch (what the collapse guard judges)
        self.alpha_history: List[Dict[str, np.ndarray]] = []

    def split_train(self, train: ArrayDataset, rng: np.random.Generator) -> Tuple[ArrayDataset, ArrayDataset]:
        """Weights on one part of the train split, alphas on the other (stratified, stable)."""
        return split_for_alphas(train, self.params.arch_portion, rng)

    def setup(self, supernet: BaseSupernet, context: StrategyContext) -> None:
        """Full or gated mode, the alphas' Adam, and the iterator over the architecture split."""
        if context.arch_data is None:
            raise CheckpointError("the differentiable strategy needs the architecture split (split_train)")
        self.context = context
        self.rng = context.rng
        self.epochs = max(1, context.epochs)
        if self.params.algorithm == "darts":
            supernet.set_mode("full")
        else:
            supernet.set_mode("gates", self._gate)
            self._resample(supernet.decisions())
        p = self.params.arch_optimizer
        self.solver = S.Adam(p.lr, p.beta1, p.beta2)
        self.alphas = supernet.arch_parameters()
        self.solver.set_parameters(self.alphas)
        self.arch_iter = train_iterator(context.arch_data, context.batch_size, self.rng, context.augment)
        self.train_iter = train_iterator(context.train_data, context.batch_size, self.rng, context.augment)
        guard = self.params.collapse_guard
        try:
            self.guard = CollapseDetector(candidate_kinds(supernet), guard.max_parameter_free, guard.labels)
        except ValueError as err:
            raise ConfigError(f"training_strategy.collapse_guard.labels: {err}") from None
        if not self.guard.watched:
            context.logger.info("collapse guard: no watched label offers both parameter-free and parametric candidates")

    # ----- Gumbel sampling -----------------------------------------------------------------------------
    def _resample(self, decisions: Mapping[str, Decision]) -> None:
        """Fresh Gumbel noise for every decision (drawn from the strategy's generator)."""
        self.noise = {k: self.rng.gumbel(size=d.n_alpha).astype(np.float32) for k, d in decisions.items()}
        for k, g in self.noise.items():
            if k in self._noise_vars:
                self._noise_vars[k].d = g
        self._tau_var.d = self.tau

    def _gate(self, decision: Decision) -> List[Tuple[int, Any]]:
        """The gate hook: Gumbel-softmax weights over the candidates (hard: the sampled one, straight-through)."""
        label = decision.label
        if label not in self._noise_vars:
            self._noise_vars[label] = nn.Variable.from_numpy_array(self.noise[label])
        w = F.softmax((decision.ensure_alpha() + self._noise_vars[label]) / self._tau_var)
        weights = split_weights(w)
        if not self.params.hard:
            return list(enumerate(weights))
        k = int(np.argmax(decision.alpha.d + self.noise[label]))
        return [(k, straight_through(weights[k]))]

    def graph_key(self, supernet: BaseSupernet) -> Hashable:
        """Hard Gumbel computes only the sampled candidates: the graph changes with the sample."""
        if self.params.algorithm == "gumbel" and self.params.hard:
            return tuple(int(np.argmax(d.ensure_alpha().d + self.noise[k])) for k, d in supernet.decisions().items())
        return supernet.graph_key()

    def active_groups(self, supernet: BaseSupernet) -> List[str]:
        """Every candidate the graph computes."""
        if self.params.algorithm == "gumbel" and self.params.hard:
            sampled = dict(zip(supernet.decisions(), self.graph_key(supernet)))
            return supernet.active_groups(mode="sample", indices=sampled)
        return supernet.active_groups(mode="full")

    # ----- the architecture step ---------------------------------------------------------------------
    def before_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """One architecture step on an architecture batch (after the warm-up), then fresh Gumbel noise."""
        p = self.params
        self.tau = p.tau_max * (p.tau_min / p.tau_max) ** (epoch / max(1, self.epochs - 1))
        if p.algorithm == "gumbel":
            self._resample(supernet.decisions())
        set_need_grad(self.alphas.values(), True)
        if epoch >= p.arch_warmup_epochs:
            self._arch_step(supernet)
        set_need_grad(self.alphas.values(), False)  # the weight step computes no alpha gradient (after_step restores)

    def after_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """The alphas need their gradient again (the weight step did not compute it)."""
        set_need_grad(self.alphas.values(), True)

    def _arch_step(self, supernet: BaseSupernet) -> None:
        p = self.params
        x, t, loss = self._graph(supernet)
        x.d, t.d = self.arch_iter.next()
        self.solver.zero_grad()
        if p.order == 2 and p.algorithm == "darts":
            self._second_order(supernet, x, t, loss)
        else:
            with no_grad_for(self._graph_weights):  # the alpha step computes no weight gradient
                loss.forward(clear_no_need_grad=True)
                loss.backward(clear_buffer=True)
        release(loss)
        self.solver.weight_decay(p.arch_optimizer.weight_decay)
        self.solver.update()

    def _graph(self, supernet: BaseSupernet) -> Tuple[nn.Variable, nn.Variable, nn.Variable]:
        key = self.graph_key(supernet)
        if self._arch_graph is None or self._arch_graph[0] != key:
            supernet.training = True
            x, t, _, loss = self.context.loss_graph(
                supernet, self.context.batch_size, self.context.arch_data.images.shape[1:]
            )
            self._arch_graph = (key, (x, t, loss))
            self._graph_weights = graph_leaves(loss, exclude=self.alphas.values())
        return self._arch_graph[1]

    def _second_order(self, supernet: BaseSupernet, x: nn.Variable, t: nn.Variable, loss: nn.Variable) -> None:
        """DARTS's unrolled gradient: dL_val(w', a)/da - lr * (dL_train(w+, a)/da - dL_train(w-, a)/da) / 2eps."""
        weights = list(supernet.weight_parameters().values())
        alphas = list(self.alphas.values())
        saved = [w.d.copy() for w in weights]
        val = (x.d.copy(), t.d.copy())
        train = self.train_iter.next()

        def grads(batch, of):
            x.d, t.d = batch
            for v in weights + alphas:
                v.grad.zero()
            loss.forward(clear_no_need_grad=True)
            loss.backward(clear_buffer=True)
            return [v.g.copy() for v in of]

        lr = self.params.unrolled_lr
        for w, g in zip(weights, grads(train, weights)):  # w' = w - lr * dL_train/dw
            w.d = w.d - lr * g
        dw_all = grads(val, weights + alphas)
        dw, da = dw_all[: len(weights)], dw_all[len(weights) :]
        eps = 0.01 / max(np.sqrt(sum(float((g * g).sum()) for g in dw)), 1e-12)
        for w, w0, g in zip(weights, saved, dw):
            w.d = w0 + eps * g
        plus = grads(train, alphas)
        for w, w0, g in zip(weights, saved, dw):
            w.d = w0 - eps * g
        minus = grads(train, alphas)
        for w, w0 in zip(weights, saved):
            w.d = w0
        for w in weights:
            w.grad.zero()
        for a, g, gp, gm in zip(alphas, da, plus, minus):
            a.g = g - lr * (gp - gm) / (2 * eps)

    # ----- collapse guard (DARTS+ early stopping) -------------------------------------------------------
    def end_epoch(self, supernet: BaseSupernet, epoch: int) -> bool:
        """Record the watched alphas and judge them: TensorBoard ``collapse/*`` scalars every epoch, one warning
        when the count of parameter-free-dominated labels reaches the limit; True (stop) under ``action: stop``."""
        self.alpha_history.append({label: self.alphas[label].d.copy() for label in self.guard.watched})
        report = self.guard.reports(self.alpha_history)[-1]
        scalars = {"parameter_free_dominant": report.count, "parameter_free_mass": report.mass}
        self.context.monitor.scalars("collapse", scalars, epoch)
        stop = report.collapsed and self.params.collapse_guard.action == "stop"
        if report.rose:
            self.context.logger.warning(
                "collapse guard: after epoch %d, %d of %d watched labels are dominated by parameter-free operations "
                "(limit %d): %s; parameter-free mass %.3f; %s",
                epoch,
                report.count,
                len(self.guard.watched),
                self.guard.max_parameter_free,
                ", ".join(f"{label} {op}" for label, op in report.dominant.items()),
                report.mass,
                "stopping the weight and architecture training (action: stop, DARTS+ early stopping)"
                if stop
                else "training goes on (action: warn)",
            )
        return stop

    # ----- resumable state ---------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Adam state of the alphas, the architecture iterator, the generator, the temperature, the alphas after
        every epoch (the collapse guard's history)."""
        states = {
            k: {"t": int(s.t), **{n: v.d.copy() for n, v in s.pstate.items()}}
            for k, s in self.solver.get_states().items()
        }
        return {
            "solver": states,
            "iterator": self.arch_iter.state_dict(),
            "train_iterator": self.train_iter.state_dict(),
            "rng": self.rng.bit_generator.state,
            "tau": self.tau,
            "alpha_history": {
                "epochs": len(self.alpha_history),
                "alphas": {k: self._alpha_series(k) for k in self.guard.watched},
            },
        }

    def _alpha_series(self, label: str) -> np.ndarray:
        """``label``'s alphas after each epoch as one ``(epochs, candidates)`` array."""
        rows = [h[label] for h in self.alpha_history]
        return np.array(rows, np.float32).reshape(len(rows), self.alphas[label].shape[0])

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
        self.train_iter.load_state_dict(state["train_iterator"])
        restore_rng(self.rng, state["rng"], "differentiable strategy")
        self.tau = float(state["tau"])
        history = state["alpha_history"]
        n, alphas = int(history["epochs"]), history["alphas"]
        if set(alphas) != set(self.guard.watched):
            raise ValueError("its collapse-guard history is not of the watched labels")
        for k in self.guard.watched:
            if np.shape(alphas[k]) != (n, self.alphas[k].shape[0]):
                raise ValueError(f"the collapse-guard history of {k!r} has shape {np.shape(alphas[k])}")
        self.alpha_history = [{k: np.asarray(alphas[k][e]) for k in self.guard.watched} for e in range(n)]
