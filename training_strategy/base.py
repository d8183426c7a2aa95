"""Training-strategy base: a policy consulted by the one loop before and after each step."""

import abc
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Iterator, List, Mapping, Tuple

import nnabla as nn
import numpy as np
from nnabla.core.module import Module

from core.graph import untraced
from core.run_logging import Monitor
from core.typed import check_ranges
from dataset.base import ArrayDataset
from search_space.base_supernet import BaseSupernet
from search_space.choices import encode_arch
from search_space.cost_model import AdditiveCost


@dataclass
class StrategyContext:
    """What a training strategy is given at setup, besides the supernet: no globals, nothing to look up."""

    criterion: Callable[..., nn.Variable]
    rng: np.random.Generator
    logger: logging.Logger
    monitor: Monitor
    batch_size: int
    augment: bool = False
    #: the loop's training data and epochs
    train_data: ArrayDataset | None = None
    epochs: int = 1
    #: the split architecture parameters learn on (``split_train``'s second part), if any
    arch_data: ArrayDataset | None = None
    #: the lookup table's additive cost of the budget metric, and the budget's target
    cost_model: AdditiveCost | None = None
    target: float | None = None
    extras: Dict[str, Any] = field(default_factory=dict)

    def loss_graph(self, network: Any, batch_size: int, sample_shape: Tuple[int, ...]) -> Tuple[nn.Variable, ...]:
        """``(x, t, logits, loss)`` of one batch through ``network`` (built untraced; logits and loss persist)."""
        x = nn.Variable((batch_size,) + tuple(sample_shape))
        t = nn.Variable((batch_size, 1))
        with untraced():
            logits = network(x)
            aux = auxiliary_outputs(self._aux_modules(network))  # read before a criterion may call the network again
            loss = self.criterion(logits, t, **self.criterion_context(network, x))
            for weight, aux_logits in aux:
                loss = loss + weight * self.criterion(aux_logits, t)
        logits.persistent = True
        loss.persistent = True
        return x, t, logits, loss

    def _aux_modules(self, network: Module) -> List[Module]:
        """The modules of ``network`` that may report an auxiliary output (found once per network)."""
        cache = self.__dict__.setdefault("_aux_cache", {})
        if id(network) not in cache:
            cache[id(network)] = (network, [m for m in module_tree(network) if "auxiliary" in m.__dict__])
        return cache[id(network)][1]

    def criterion_context(self, network: Any, x: nn.Variable | None = None) -> Dict[str, Any]:
        """The keyword context a criterion gets: the input batch ``x`` (if given; a distillation teacher reads it)
        and, for a searchable network, the supernet, the cost model and the target."""
        context: Dict[str, Any] = {} if x is None else {"x": x}
        if hasattr(network, "decisions"):
            context.update(supernet=network, cost_model=self.cost_model, target_hc=self.target)
        return context


def module_tree(network: Module) -> List[Module]:
    """Every module of ``network``'s tree, depth first."""
    found, stack = [], [network]
    while stack:
        m = stack.pop()
        found.append(m)
        stack.extend(reversed(list(m.submodules.values())))
    return found


def auxiliary_outputs(modules: List[Module]) -> List[Tuple[float, nn.Variable]]:
    """``(weight, logits)`` of the auxiliary classifiers the last training-mode call of ``modules`` computed.

    A module reports one by holding ``auxiliary = (weight, logits)`` (plain attribute, None when there is
    none) after its call; the training loss adds ``weight * criterion(logits, target)`` (DARTS's auxiliary head).
    """
    out = []
    for m in modules:
        aux = m.__dict__.get("auxiliary")
        if aux is not None:
            out.append((float(aux[0]), aux[1]))
    return out


def training_schedules(network: Module) -> List[Callable[[float], None]]:
    """The ``schedule`` callables modules hold: told the training progress ``epoch / epochs`` every step."""
    return [m.__dict__["schedule"] for m in module_tree(network) if callable(m.__dict__.get("schedule"))]


class BaseTrainingStrategy(abc.ABC):
    """Decides the active path (and, for differentiable ones, moves arch params); the loop does the rest."""

    #: whether the strategy learns the architecture parameters (what a differentiable search reads)
    learns_arch_parameters: bool = False

    @dataclass(frozen=True)
    class Params:
        """No parameters."""

    def __init__(self, params: Any):
        if params is not None:
            check_ranges(params, "training_strategy")
        self.params = params

    def split_train(self, train: ArrayDataset, rng: np.random.Generator) -> Tuple[ArrayDataset, ArrayDataset | None]:
        """``(weight data, architecture data)``: bi-level strategies keep part of the train split for the alphas."""
        return train, None

    def setup(self, supernet: BaseSupernet, context: StrategyContext) -> None:
        """Called once before training, with everything the strategy may use (create optimizers, iterators...)."""

    @abc.abstractmethod
    def before_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """Select what the next training step computes."""

    def passes(self, supernet: BaseSupernet) -> Iterator[None]:
        """Set up each forward/backward pass of the step in turn, yielding once per pass (default: one pass of
        what ``before_step`` selected). Every pass runs on the step's same batch and their gradients are summed
        into one update of ``active_groups`` (which must cover every pass): FairNAS trains m paths per step."""
        yield

    def after_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        """Called after the weight update (e.g. to update architecture parameters)."""

    def end_epoch(self, supernet: BaseSupernet, epoch: int) -> bool:
        """Called after each epoch (``epoch`` = epochs trained so far), before the epoch's checkpoint is written.

        True stops the training there (e.g. DARTS+ early stopping): the loop writes that checkpoint, records the
        stop in it (a resumed run does not train on) and returns, so the run goes on as if training had ended.
        """
        return False

    def weight_groups(self, supernet: BaseSupernet) -> "OrderedDict[str, OrderedDict[str, nn.Variable]]":
        """Weights partitioned by the optimizer state they keep (one group per candidate)."""
        return supernet.weight_groups()

    def active_groups(self, supernet: BaseSupernet) -> List[str]:
        """Weight groups the step trains (default: the single active path's)."""
        return supernet.active_groups()

    def state_dict(self) -> Dict[str, Any]:
        """The strategy's own resumable state (architecture parameters' optimizer, temperatures, baselines...).

        Saved with every checkpoint; values may be JSON data or numpy arrays. Stateless strategies keep ``{}``.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict`` output."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)}")

    def graph_key(self, supernet: BaseSupernet) -> Hashable:
        """Identity of the graph the step needs; the loop rebuilds the graph when it changes."""
        return supernet.graph_key()


class FixedNetwork(BaseTrainingStrategy):
    """The policy of a standalone network (retraining): nothing to choose, one weight group.

    ``arch`` (JSON data) is kept in its state, so a checkpoint of another architecture is recognised.
    """

    def __init__(self, arch: Mapping[str, Any] | None = None) -> None:
        super().__init__(None)
        self.epochs, self.schedules = 1, []
        self.arch = None if arch is None else json.loads(encode_arch(arch))

    def state_dict(self) -> Dict[str, Any]:
        """The architecture being trained."""
        return {} if self.arch is None else {"arch": self.arch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Refuse the state of another architecture."""
        if dict(state).get("arch") != self.arch:
            raise ValueError(f"it trains {dict(state).get('arch')}, not {self.arch}")

    def setup(self, supernet: Module, context: StrategyContext) -> None:
        """Find the network's training schedules (e.g. a drop-path rate rising over the epochs)."""
        self.epochs, self.schedules = context.epochs, training_schedules(supernet)

    def before_step(self, supernet: Module, epoch: int, step: int, rng: np.random.Generator) -> None:
        """Nothing to select; schedules learn the progress."""
        for schedule in self.schedules:
            schedule(epoch / self.epochs)

    def weight_groups(self, supernet: Module) -> "OrderedDict[str, OrderedDict[str, nn.Variable]]":
        return OrderedDict(all=supernet.get_parameters(grad_only=True))

    def active_groups(self, supernet: Module) -> List[str]:
        return ["all"]

    def graph_key(self, supernet: Module) -> Hashable | None:
        return "static"
