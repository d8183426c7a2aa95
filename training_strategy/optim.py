"""Solvers per weight group, learning-rate schedules (nnabla's schedulers) and global-norm clipping."""

from collections import OrderedDict
from typing import Dict, List, Mapping

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

    def step(self, names: List[str], lr: float, grad_scale: float = 1.0, clip: float | None = None) -> float:
        """Scale, clip (global norm), decay and update the named groups; returns the grad norm."""
        active = self._active(names)
        if grad_scale != 1.0:
            for n in active:
                self.solvers[n].scale_grad(grad_scale)
        norm = self.grad_norm(active) if clip is not None else float("nan")
        factor = clip / norm if clip is not None and norm > clip else 1.0
        for n in active:
            solver = self.solvers[n]
            if factor != 1.0:
                solver.scale_grad(factor)
            if self.cfg.name != "adamw" and self.cfg.weight_decay > 0:
                solver.weight_decay(self.cfg.weight_decay)
            solver.set_learning_rate(lr)
            solver.update()
        return norm

    def save_states(self, path_prefix: str) -> Dict[str, str]:
        """Save each group's solver state to ``{prefix}.{i}.h5``; returns group -> file."""
        files = {}
        for i, (name, solver) in enumerate(self.solvers.items()):
            files[name] = f"{path_prefix}.{i}.h5"
            solver.save_states(files[name])
        return files

    def load_states(self, files: Mapping[str, str]) -> None:
        """Inverse of ``save_states``."""
        for name, path in files.items():
            self.solvers[name].load_states(path)
