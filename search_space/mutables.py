"""Mutables: the searchable decisions inside any nnabla Module tree (seed 001's LayerChoice / InputChoice).

A mutable is a Module that computes one of several things; *what* it computes is its ``Decision``, a
plain object shared by every mutable with the same label (same label = same decision, one architecture
parameter). A decision has a mode:

- ``sample``: only the chosen candidate / inputs are computed (single-path training, evaluation);
- ``full``:   every candidate, weighted by ``softmax(alpha)`` (DARTS); inputs weighted likewise;
- ``max``:    only the ``argmax(alpha)`` candidate / the top-k inputs (deriving from learned weights);
- ``gates``:  a strategy's hook picks the candidates and their weight Variables (ProxylessNAS binary gates).

Bookkeeping (finding mutables, binding labels, switching paths) lives in plain functions and objects, not
in Module methods: every Module method call goes through nnabla's scope wrapper, which costs milliseconds.
"""

from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.core.module import Module

from core.errors import ArchitectureError, ConfigError
from search_space.choices import Categorical, SearchSpaceChoices, Subset
from search_space.layers import ModuleList

MODES = ("sample", "full", "max", "gates")
REDUCTIONS = ("sum", "mean", "concat", "none")

#: a gate hook: ``hook(decision) -> [(candidate index, weight Variable or None), ...]`` (None = weight 1); an
#: entry ``(index, weight, True)`` detaches the candidate: its output is computed and its weight gets a gradient,
#: but no gradient flows into the candidate (ProxylessNAS's unsampled path of two)
GateHook = Callable[["Decision"], Sequence[Tuple[Any, ...]]]


class Observer:
    """What the mutables of forward passes received and returned (for lookup tables and pruning)."""

    def __init__(self) -> None:
        #: LayerChoice -> the input shape it received / the Variable it returned (keyed by the mutable's id)
        self.shapes: Dict[int, Tuple[int, ...]] = {}
        self.outputs: Dict[int, nn.Variable] = {}
        #: InputChoice -> the candidate inputs it was given
        self.inputs: Dict[int, List[Any]] = {}


_observer: Observer | None = None


@contextmanager
def observing() -> Iterator[Observer]:
    """Record what every mutable called inside the block receives and returns (not re-entrant)."""
    global _observer
    if _observer is not None:
        raise RuntimeError("observing() is already active")
    _observer = Observer()
    try:
        yield _observer
    finally:
        _observer = None


class Decision:
    """One labelled decision: its choice, the active value, the mode and (once created) ``alpha``."""

    def __init__(self, label: str, choice: Categorical, n_alpha: int):
        self.label, self.choice, self.n_alpha = label, choice, n_alpha
        self.index = 0
        self.mode = "sample"
        self.alpha: nn.Variable | None = None
        self.gate_hook: GateHook | None = None
        #: full mode computes the top inputs only, with straight-through weights (a concat of k of n inputs)
        self.straight_through = False

    @property
    def value(self) -> Any:
        """The active value."""
        return self.choice.values[self.index]

    def set(self, value: Any) -> None:
        """Make ``value`` the active one (ArchitectureError if the choice does not hold it)."""
        value = self.choice.normalize(value)
        if value not in self.choice.values:
            raise ArchitectureError(f"label {self.label!r}: invalid value {value!r}; valid: {list(self.choice.values)}")
        self.index = self.choice.values.index(value)

    def ensure_alpha(self) -> nn.Variable:
        """This decision's architecture logits (created once, zeros: every option equally likely)."""
        if self.alpha is None:
            self.alpha = nn.Variable.from_numpy_array(np.zeros(self.n_alpha, np.float32), need_grad=True)
        return self.alpha

    def probabilities(self) -> np.ndarray:
        """``softmax(alpha)`` as numpy; per-input ``sigmoid(alpha)`` for an any-of-n input choice."""
        a = np.zeros(self.n_alpha) if self.alpha is None else self.alpha.d.astype(np.float64)
        if isinstance(self.choice, Subset) and self.choice.k is None:
            return 1.0 / (1.0 + np.exp(-a))
        e = np.exp(a - a.max())
        return e / e.sum()

    def graph_key(self) -> Any:
        """What the graph built for this decision depends on (rebuild when it changes)."""
        if self.mode == "sample":
            return self.index
        if self.mode == "max" or (self.mode == "full" and self.straight_through):
            return (self.mode, tuple(np.argsort(-self.probabilities(), kind="stable").tolist()))
        return self.mode


class Mutable(Module):
    """Base of LayerChoice and InputChoice: a labelled decision (``label=None``: named after its place)."""

    def __init__(self, label: str | None, choice: Categorical, n_alpha: int):
        if label is not None and (not isinstance(label, str) or not label):
            raise ArchitectureError(f"a mutable label must be a non-empty string, got {label!r}")
        self.__dict__["label"] = label
        self.__dict__["decision"] = Decision(label or "?", choice, n_alpha)


class LayerChoice(Mutable):
    """Choose one of ``candidates`` (a list, or name -> module); the value is the candidate's name.

    List candidates are named ``"0"``, ``"1"``... A candidate with ``is_zero = True`` (the Zero op) is
    not computed in full mode (its weighted output is zero anyway).
    """

    def __init__(self, candidates: Sequence[Module] | Mapping[str, Module], label: str | None = None):
        if isinstance(candidates, Mapping):
            names, modules = [str(k) for k in candidates], list(candidates.values())
        else:
            modules = list(candidates)
            names = [str(i) for i in range(len(modules))]
        if not modules:
            raise ArchitectureError(f"LayerChoice {label or ''}: needs at least one candidate")
        self.candidates = ModuleList(modules)
        self.__dict__["candidate_names"] = names
        super().__init__(label, Categorical(tuple(names)), len(names))

    def call(self, x):
        d = self.decision
        if d.mode == "sample":
            y = self.candidates[d.index](x)
        elif d.mode == "max":
            y = self.candidates[int(np.argmax(d.probabilities()))](x)
        elif d.mode == "full":
            y = weighted_sum([(i, w) for i, w in enumerate(split_weights(F.softmax(d.ensure_alpha())))], self, x)
        elif d.gate_hook is None:
            raise ArchitectureError(f"LayerChoice {d.label!r}: mode 'gates' needs a gate hook from the strategy")
        else:
            y = weighted_sum(d.gate_hook(d), self, x)
        if _observer is not None:
            _observer.shapes[id(self)], _observer.outputs[id(self)] = tuple(x.shape), y
        return y


def split_weights(w: nn.Variable) -> List[nn.Variable]:
    """The entries of a 1-d weight Variable as separate scalar Variables."""
    return list(F.split(w, axis=0)) if w.shape[0] > 1 else [F.reshape(w, ())]


def scale(x: nn.Variable, w: nn.Variable) -> nn.Variable:
    """``x * w`` for a one-element Variable ``w``: a 1x1 depthwise convolution by ``w`` on (N, C, L) / (N, C, H, W).

    Same value and input gradient, ``w``'s gradient up to float rounding; nnabla's broadcast ``Mul2`` costs ~10x
    more, forward and backward (it was a third of a DARTS step). An ``affine`` on ``x`` reshaped to (N, 1) is as
    fast, but its in-place reshape would keep ``x`` through the whole pass (no clearing, no recomputation).
    """
    if x.ndim not in (3, 4):
        return x * F.reshape(w, (1,) * x.ndim)
    kernel = F.broadcast(F.reshape(w, (1,) * (x.ndim - 1)), (x.shape[1],) + (1,) * (x.ndim - 2))
    return F.depthwise_convolution(x, kernel)


#: what a candidate computes that is recomputed in the backward pass when several candidates are computed:
#: elementwise, normalisation, pooling and slicing functions and 1x1 convolutions (cheap next to the kxk
#: convolutions, whose outputs are kept, but most of the memory of a step that computes every candidate)
RECOMPUTED = frozenset(
    ("ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "Sigmoid", "Tanh", "Swish", "HardSigmoid", "HardTanh")
    + ("BatchNormalization", "FusedBatchNormalization", "MaxPooling", "AveragePooling", "SumPooling")
    + ("Add2", "Sub2", "Mul2", "Div2", "AddScalar", "MulScalar", "RSubScalar", "RDivScalar", "Slice", "Pad")
    + ("Concatenate", "Broadcast")
)


def _pointwise(f) -> bool:
    """Whether ``f`` is a 1x1 convolution (weights (O, I, 1, 1) / depthwise (C, 1, 1))."""
    kind = f.info.type_name
    if kind not in ("Convolution", "DepthwiseConvolution"):
        return False
    kernel = f.inputs[1].shape[2:] if kind == "Convolution" else f.inputs[1].shape[1:]
    return all(k == 1 for k in kernel)


def recompute_cheap(y: nn.Variable, x: nn.Variable) -> None:
    """Flag for recomputation what ``y`` computes from ``x`` with cheap functions (``RECOMPUTED``, 1x1 convolutions).

    nnabla clears a flagged Variable's data once the forward pass has used it and recomputes it when the backward
    pass needs it (BatchNormalization without updating its running statistics again): values, gradients and
    running statistics are unchanged; the peak memory of a DARTS step falls by 60 % for ~15 % more time (the kxk
    convolutions' outputs stay, so no convolution but 1x1 ones runs twice).
    """
    stop, seen, stack = hash(x), set(), [y]
    while stack:
        v = stack.pop()
        f = v.parent
        if f is None or hash(v) == stop or hash(v) in seen:
            continue
        seen.add(hash(v))
        kind = f.info.type_name
        if (kind in RECOMPUTED or _pointwise(f)) and not any(o.persistent for o in f.outputs):
            for o in f.outputs:
                o.recompute = True
        stack.extend(f.inputs)


def weighted_sum(pairs: Sequence[Tuple[Any, ...]], choice: LayerChoice, x: nn.Variable) -> nn.Variable:
    """``sum(w * candidate_i(x))`` over ``pairs`` of (index, weight Variable or None[, detach]); Zero candidates
    skipped. A detached candidate passes no gradient back (``need_grad`` off on its output: its backward is skipped).

    When several candidates are computed, their cheap intermediate results are recomputed in the backward pass
    (``recompute_cheap``) rather than all kept between the passes.
    """
    terms = []
    computed = [p[0] for p in pairs if not getattr(choice.candidates[p[0]], "is_zero", False)]
    for i, w, *detach in pairs:
        module = choice.candidates[i]
        if getattr(module, "is_zero", False) and len(pairs) > 1:
            continue
        y = module(x)
        if detach and detach[0]:
            y.need_grad = False
        if len(computed) > 1:
            recompute_cheap(y, x)
        terms.append(y if w is None else scale(y, w))
    if not terms:  # only Zero candidates: their (zero) output, any will do
        return choice.candidates[pairs[0][0]](x)
    return terms[0] if len(terms) == 1 else F.add_n(*terms)


class InputChoice(Mutable):
    """Choose ``n_chosen`` of ``n_candidates`` inputs (``None``: any number, "one or none" when n = 1).

    Called with the list of candidate inputs; returns their ``reduction`` (sum | mean | concat along
    channels | none = the list), or None when nothing is chosen. Full mode weights every input by
    ``n_chosen * softmax(alpha)`` (``sigmoid(alpha)`` when any number may be chosen).
    """

    def __init__(self, n_candidates: int, n_chosen: int | None = 1, reduction: str = "sum", label: str | None = None):
        if reduction not in REDUCTIONS:
            raise ConfigError(f"InputChoice reduction {reduction!r}: valid: {', '.join(REDUCTIONS)}")
        self.__dict__["n_candidates"], self.__dict__["n_chosen"] = n_candidates, n_chosen
        self.__dict__["reduction"] = reduction
        super().__init__(label, Subset(n_candidates, n_chosen), n_candidates)
        self.decision.straight_through = reduction == "concat" and n_chosen != n_candidates

    def call(self, inputs):
        d = self.decision
        if len(inputs) != self.n_candidates:
            raise ArchitectureError(f"InputChoice {d.label!r}: expected {self.n_candidates} inputs, got {len(inputs)}")
        if _observer is not None:
            _observer.inputs[id(self)] = list(inputs)
        if d.mode == "full":
            w = input_weights(d)
            if d.straight_through:  # a concat of k of n keeps its width: the top inputs, weight 1, gradient of w
                chosen = top_inputs(d, self.n_chosen)
                ws = split_weights(w)
                picked = [scale(inputs[i], straight_through(ws[i])) for i in chosen]
                return reduce_inputs(picked, self.reduction) if picked else None
            weighted = [scale(x, wi) for x, wi in zip(inputs, split_weights(w))]
            return reduce_inputs(weighted, self.reduction, divisor=self.n_chosen or self.n_candidates)
        chosen = self.decision.value if d.mode == "sample" else top_inputs(d, self.n_chosen)
        if not chosen:
            return None
        return reduce_inputs([inputs[i] for i in chosen], self.reduction, divisor=len(chosen))


def input_weights(decision: Decision) -> nn.Variable:
    """Full-mode weights of an input choice's inputs: ``k * softmax(alpha)`` for k of n, else ``sigmoid(alpha)``."""
    alpha, k = decision.ensure_alpha(), decision.choice.k
    return F.sigmoid(alpha) if k is None else F.softmax(alpha) * float(k)


def straight_through(w: nn.Variable) -> nn.Variable:
    """A Variable whose value is 1 and whose gradient is ``w``'s."""
    return w + F.r_sub_scalar(w.get_unlinked_variable(need_grad=False), 1.0)


def top_inputs(decision: Decision, k: int | None) -> Tuple[int, ...]:
    """The inputs max mode keeps: the ``k`` largest alphas, or every input with ``sigmoid(alpha) > 0.5``."""
    alpha = decision.ensure_alpha().d
    if k is None:
        return tuple(int(i) for i in np.flatnonzero(alpha > 0))
    return tuple(sorted(int(i) for i in np.argsort(-alpha, kind="stable")[:k]))


def reduce_inputs(xs: List[nn.Variable], reduction: str, divisor: int = 1):
    """Sum, mean, channel concatenation, or the list itself."""
    if reduction == "none":
        return xs
    if reduction == "concat":
        return xs[0] if len(xs) == 1 else F.concatenate(*xs, axis=1)
    total = xs[0]
    for x in xs[1:]:  # pairwise: exported networks need ONNX, which nnabla_converter cannot write AddN to
        total = total + x
    return total / float(divisor) if reduction == "mean" and divisor != 1 else total


def find_mutables(module: Module, prefix: str = "") -> List[Tuple[str, Mutable]]:
    """Every mutable in ``module``'s tree with its path (depth first, in construction order)."""
    found: List[Tuple[str, Mutable]] = []
    stack = [(prefix, module)]
    while stack:
        path, m = stack.pop()
        if isinstance(m, Mutable):
            found.append((path, m))
        children = [(f"{path}/{name}" if path else name, child) for name, child in m.submodules.items()]
        stack.extend(reversed(children))
    return found


def bind_decisions(module: Module) -> "OrderedDict[str, Decision]":
    """Give every mutable of ``module`` its label's one shared Decision; returns ``{label: decision}``.

    An unlabelled mutable is labelled by its path in the tree. Mutables sharing a label must offer the
    same choice.
    """
    decisions: OrderedDict[str, Decision] = OrderedDict()
    for path, m in find_mutables(module):
        label = m.label or path
        own = m.decision
        if label in decisions:
            shared = decisions[label]
            if shared.choice != own.choice:
                raise ArchitectureError(
                    f"label {label!r} is shared by choices with different values: "
                    f"{list(shared.choice.values)} vs {list(own.choice.values)}"
                )
        else:
            own.label = label
            decisions[label] = own
        m.__dict__["decision"] = decisions[label]
    return decisions


def decisions_choices(decisions: Mapping[str, Decision]) -> SearchSpaceChoices:
    """The plain-data space of a set of decisions."""
    return SearchSpaceChoices([(label, d.choice) for label, d in decisions.items()])


def set_mode(decisions: Mapping[str, Decision], mode: str, gate_hook: GateHook | None = None) -> None:
    """Put every decision in ``mode`` (one of MODES)."""
    if mode not in MODES:
        raise ConfigError(f"mutable mode {mode!r}: valid: {', '.join(MODES)}")
    for d in decisions.values():
        d.mode = mode
        d.gate_hook = gate_hook if mode == "gates" else None
        if mode in ("full", "max"):
            d.ensure_alpha()


def derived_arch(decisions: Mapping[str, Decision]) -> Dict[str, Any]:
    """The architecture the learned weights pick: argmax per LayerChoice, top-k inputs per InputChoice."""
    out: Dict[str, Any] = {}
    for label, d in decisions.items():
        if isinstance(d.choice, Subset):
            out[label] = top_inputs(d, d.choice.k)
        else:
            out[label] = d.choice.values[int(np.argmax(d.probabilities()))]
    return out
