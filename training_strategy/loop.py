"""The one training loop: epochs, warm-up, gradient accumulation, clipping, LR schedule, metering, checkpoints."""

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import nnabla as nn
import numpy as np
from nnabla.core.module import Module
from tqdm import tqdm

from core.checkpoint import atomic_path, read_json, write_json
from core.config import TrainConfig
from core.run_logging import Monitor
from core.seed import spawn_rng
from dataset.base import ArrayDataset, steps_per_epoch, train_iterator
from training_strategy.base import BaseTrainingStrategy
from training_strategy.evaluation import evaluate_network
from training_strategy.optim import GroupedSolver, make_scheduler


@dataclass
class RunIO:
    """Where a loop reports: logger, TensorBoard monitor and checkpoint directory (None = no checkpoints)."""

    logger: logging.Logger
    monitor: Monitor
    checkpoint_dir: str | None = None
    progress: bool = True


class TrainLoop:
    """Trains ``network`` with ``criterion``; ``policy`` decides per step which path/groups are active."""

    def __init__(
        self,
        network: Module,
        criterion: Callable,
        train_data: ArrayDataset,
        cfg: TrainConfig,
        policy: BaseTrainingStrategy,
        rng: np.random.Generator,
        io: RunIO,
        tag: str,
        valid_data: ArrayDataset | None = None,
        augment: bool = False,
        eval_batch_size: int = 256,
    ):
        self.network, self.criterion, self.cfg, self.policy = network, criterion, cfg, policy
        self.train_data, self.valid_data = train_data, valid_data
        self.rng, self.io, self.tag, self.eval_batch_size = rng, io, tag, eval_batch_size
        self.mini_batch = cfg.mini_batch or cfg.batch_size
        self.accum = cfg.batch_size // self.mini_batch
        full = steps_per_epoch(train_data, cfg.batch_size)
        self.steps_per_epoch = min(full, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else full
        self.policy.setup(network, rng)
        self.solver = GroupedSolver(policy.weight_groups(network), cfg.optimizer)
        self.scheduler = make_scheduler(cfg, self.steps_per_epoch)
        self.iterator = train_iterator(train_data, self.mini_batch, spawn_rng(rng), augment)
        self.epoch = 0
        self.global_step = 0
        self.history: List[Dict[str, float]] = []
        self._graph_key: Any = object()
        self._graph: tuple | None = None

    def _build_graph(self) -> tuple:
        key = self.policy.graph_key(self.network)
        if self._graph is None or key != self._graph_key:
            x = nn.Variable((self.mini_batch,) + self.train_data.images.shape[1:])
            t = nn.Variable((self.mini_batch, 1))
            logits = self.network(x)
            logits.persistent = True
            loss = self.criterion(logits, t)
            loss.persistent = True
            self._graph, self._graph_key = (x, t, logits, loss), key
        return self._graph

    def train_step(self) -> Dict[str, float]:
        """One optimizer step over ``batch_size`` samples (``batch_size / mini_batch`` accumulated passes)."""
        self.network.training = True
        self.policy.before_step(self.network, self.epoch, self.global_step, self.rng)
        x, t, logits, loss = self._build_graph()
        active = self.policy.active_groups(self.network)
        self.solver.zero_grad(active)
        loss_sum, correct = 0.0, 0
        for _ in range(self.accum):
            x.d, t.d = self.iterator.next()
            loss.forward(clear_no_need_grad=True)
            loss.backward(clear_buffer=True)
            loss_sum += float(loss.d)
            correct += int((logits.d.argmax(axis=1) == t.d[:, 0]).sum())
        lr = self.scheduler.get_learning_rate(self.global_step)
        norm = self.solver.step(active, lr, grad_scale=1.0 / self.accum, clip=self.cfg.grad_clip)
        self.policy.after_step(self.network, self.epoch, self.global_step, self.rng)
        self.global_step += 1
        return {"loss": loss_sum / self.accum, "accuracy": correct / self.cfg.batch_size, "lr": lr, "grad_norm": norm}

    def run(self) -> List[Dict[str, float]]:
        """Train for the remaining epochs; returns one metrics dict per epoch."""
        log = self.io.logger
        log.info(
            "[%s] %d epochs x %d steps (batch %d = %d x %d accumulated)",
            self.tag,
            self.cfg.epochs,
            self.steps_per_epoch,
            self.cfg.batch_size,
            self.accum,
            self.mini_batch,
        )
        while self.epoch < self.cfg.epochs:
            sums: Dict[str, float] = {"loss": 0.0, "accuracy": 0.0}
            bar = tqdm(
                range(self.steps_per_epoch),
                desc=f"{self.tag} {self.epoch + 1}/{self.cfg.epochs}",
                disable=not self.io.progress,
                leave=False,
                dynamic_ncols=True,
            )
            for _ in bar:
                m = self.train_step()
                sums["loss"] += m["loss"]
                sums["accuracy"] += m["accuracy"]
                bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}")
                if self.global_step % self.cfg.log_every == 0:
                    self.io.monitor.scalars(f"{self.tag}/train_step", m, self.global_step)
            bar.close()
            epoch_m = {k: v / self.steps_per_epoch for k, v in sums.items()}
            if self.valid_data is not None:
                v = evaluate_network(self.network, self.valid_data, self.eval_batch_size, criterion=self.criterion)
                epoch_m.update({f"valid_{k}": val for k, val in v.items()})
            self.epoch += 1
            epoch_m["epoch"] = self.epoch
            self.history.append(epoch_m)
            self.io.monitor.scalars(f"{self.tag}/epoch", epoch_m, self.epoch)
            log.info(
                "[%s] epoch %d/%d %s",
                self.tag,
                self.epoch,
                self.cfg.epochs,
                " ".join(f"{k}={v:.4f}" for k, v in epoch_m.items() if k != "epoch"),
            )
            if self.io.checkpoint_dir and (
                self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs
            ):
                self.save_checkpoint(self.io.checkpoint_dir)
        return self.history

    def save_checkpoint(self, directory: str) -> None:
        """Weights, per-group solver states, loop and rng state of this epoch.

        Data files carry the epoch in their names and ``<tag>_state.json`` (written last, atomically)
        names the current set, so a crash mid-save leaves the previous checkpoint intact.
        """
        os.makedirs(directory, exist_ok=True)
        state_path = os.path.join(directory, f"{self.tag}_state.json")
        previous = read_json(state_path) if os.path.isfile(state_path) else None
        params_file = f"{self.tag}_params.{self.epoch}.h5"
        with atomic_path(os.path.join(directory, params_file)) as tmp:
            nn.save_parameters(tmp, self.network.get_parameters(grad_only=False))
        solver_files = {}
        for i, (name, solver) in enumerate(self.solver.solvers.items()):
            solver_files[name] = f"{self.tag}_solver.{i}.{self.epoch}.h5"
            with atomic_path(os.path.join(directory, solver_files[name])) as tmp:
                solver.save_states(tmp)
        state = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": self.history,
            "params_file": params_file,
            "solver_files": solver_files,
            "rng_state": self.rng.bit_generator.state,
        }
        write_json(state_path, state)
        if previous is not None:
            current = {params_file, *solver_files.values()}
            for old in [previous["params_file"], *previous["solver_files"].values()]:
                if old not in current and os.path.isfile(os.path.join(directory, old)):
                    os.remove(os.path.join(directory, old))

    def has_checkpoint(self, directory: str) -> bool:
        """Whether ``directory`` holds a checkpoint of this loop's tag."""
        return os.path.isfile(os.path.join(directory, f"{self.tag}_state.json"))

    def load_checkpoint(self, directory: str) -> None:
        """Resume from ``save_checkpoint`` output: weights are copied into the existing Variables."""
        state = read_json(os.path.join(directory, f"{self.tag}_state.json"))
        load_weights(self.network, os.path.join(directory, state["params_file"]))
        self.solver.load_states({k: os.path.join(directory, v) for k, v in state["solver_files"].items()})
        self.epoch, self.global_step, self.history = state["epoch"], state["global_step"], state["history"]
        self.rng.bit_generator.state = state["rng_state"]


def load_weights(network: Module, path: str) -> None:
    """Copy saved parameter values into ``network``'s existing Variables (names and shapes must match)."""
    scope: OrderedDict[str, nn.Variable] = OrderedDict()
    with nn.parameter_scope("", scope):  # a private scope: nothing leaks into nnabla's global one
        nn.load_parameters(path)
        loaded = nn.get_parameters(grad_only=False)
    for k, v in network.get_parameters(grad_only=False).items():
        if k not in loaded:
            raise ValueError(f"{path}: no value for parameter {k!r}")
        if loaded[k].shape != v.shape:
            raise ValueError(f"{path}: {k} has shape {loaded[k].shape}, network expects {v.shape}")
        v.d = loaded[k].d
