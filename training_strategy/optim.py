"""Solvers per weight group, learning-rate schedules (nnabla's schedulers) and global-norm clipping."""

from collections import OrderedDict
from typing import Any, Dict, List, Mapping

import nnabla as nn
import nnabla.solvers as S
import numpy as np
from nnabla.utils.learning_rate_scheduler import (
    BaseLearningRateScheduler,
    CosineScheduler,
    LinearWarmupScheduler,
    StepScheduler,
)

from core.config import OptimizerConfig, TrainConfig
from core.errors import CheckpointError


def make_solver(cfg: OptimizerConfig) -> S.Solver:
    """An nnabla solver for ``cfg`` (weight decay is applied by ``GroupedSolver`` except for adamw)."""
    if cfg.name == "sgd":
        return S.Sgd(cfg.lr)
    if cfg.name == "momentum":
        return S.Momentum(cfg.lr, cfg.momentum)
    if cfg.name == "nesterov":
        return S.Nesterov(cfg.lr, cfg.momentum)
    if cfg.name == "adam":
        return S.Adam(cfg.lr, cfg.beta1, cfg.beta2)
    return S.AdamW(cfg.lr, cfg.beta1, cfg.beta2, wd=cfg.weight_decay)


class ConstantScheduler(BaseLearningRateScheduler):
    """The initial learning rate at every iteration."""

    def __init__(self, init_lr: float):
        self.init_lr = init_lr

    def get_learning_rate(self, iter: int) -> float:  # noqa: A002  (nnabla's signature)
        return self.init_lr


def make_scheduler(cfg: TrainConfig, steps_per_epoch: int) -> BaseLearningRateScheduler:
    """Cosine/step/constant schedule over all iterations; a warm-up scales its first iterations linearly.

    nnabla's LinearWarmupScheduler multiplies the inner schedule at the same iteration, so the
    inner schedule spans the whole run (a cosine ends at zero on the last step).
    """
    lr = cfg.optimizer.lr
    warm = cfg.warmup_epochs * steps_per_epoch
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        sched: BaseLearningRateScheduler = CosineScheduler(lr, total)
    elif cfg.lr_schedule == "step":
        every = max(1, cfg.step_epochs * steps_per_epoch)
        sched = StepScheduler(lr, cfg.step_gamma, list(range(every, total + 1, every)))
    else:
        sched = ConstantScheduler(lr)
    return LinearWarmupScheduler(sched, warm) if warm > 0 else sched


class GroupedSolver:
    """One solver state per weight group; each step updates only the groups it trained."""

    def __init__(self, groups: Mapping[str, Mapping[str, nn.Variable]], cfg: OptimizerConfig):
        self.cfg = cfg
        self.solvers: Dict[str, S.Solver] = OrderedDict()
        self.params: Dict[str, Mapping[str, nn.Variable]] = OrderedDict()
        for name, params in groups.items():
            if params:
                solver = make_solver(cfg)
                solver.set_parameters(params)
                self.solvers[name] = solver
                self.params[name] = params

    def _active(self, names: List[str]) -> List[str]:
        return [n for n in names if n in self.solvers]

    def zero_grad(self, names: List[str]) -> None:
        """Zero the gradients of the named groups."""
        for n in self._active(names):
            self.solvers[n].zero_grad()

    def grad_norm(self, names: List[str]) -> float:
        """Global L2 norm of the named groups' gradients."""
        total = 0.0
        for n in self._active(names):
            for v in self.params[n].values():
                g = v.g
                total += float(np.dot(g.ravel(), g.ravel()))
        return total**0.5

    def prepare(self, names: List[str], grad_scale: float = 1.0) -> float:
        """Scale the named groups' gradients (accumulation) and return their global L2 norm (NaN/inf if broken)."""
        active = self._active(names)
        if grad_scale != 1.0:
            for n in active:
                self.solvers[n].scale_grad(grad_scale)
        return self.grad_norm(active)

    def update(self, names: List[str], lr: float, norm: float, clip: float | None = None) -> None:
        """Clip to the global norm ``clip`` (given the ``prepare`` norm), decay and update the named groups."""
        factor = clip / norm if clip is not None and norm > clip else 1.0
        for n in self._active(names):
            solver = self.solvers[n]
            if factor != 1.0:
                solver.scale_grad(factor)
            if self.cfg.name != "adamw" and self.cfg.weight_decay > 0:
                solver.weight_decay(self.cfg.weight_decay)
            solver.set_learning_rate(lr)
            solver.update()

    def state_dict(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """``{group: {param: {"t": steps, "states": {name: array}}}}``: every group's solver state."""
        out: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for name, solver in self.solvers.items():
            out[name] = {
                p: {"t": int(st.t), "states": {k: v.d.copy() for k, v in st.pstate.items()}}
                for p, st in solver.get_states().items()
            }
        return out

    def load_state_dict(self, state: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """Restore ``state_dict`` output; groups, parameters and state shapes must match exactly."""
        if set(state) != set(self.solvers):
            diff = sorted(set(state) ^ set(self.solvers))
            raise CheckpointError(f"solver state: weight groups differ from the network's (e.g. {diff[0]!r})")
        for name, solver in self.solvers.items():
            current = solver.get_states()
            saved = state[name]
            if set(saved) != set(current):
                raise CheckpointError(f"solver state of group {name!r}: parameters differ from the network's")
            for p, st in current.items():
                for k, v in st.pstate.items():
                    value = np.asarray(saved[p]["states"][k])
                    if value.shape != tuple(v.shape):
                        raise CheckpointError(f"solver state {name}/{p}/{k}: shape {value.shape}, expected {v.shape}")
                    v.d = value
                st.t = int(saved[p]["t"])
            solver.set_states(current)
