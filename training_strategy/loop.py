"""The one training loop: epochs, warm-up, gradient accumulation, clipping, LR schedule, metering, checkpoints."""

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping

import nnabla as nn
import numpy as np
from nnabla.core.module import Module
from tqdm import tqdm

from core.config import TrainConfig
from core.errors import CheckpointError, TrainingDivergedError
from core.run_logging import Monitor
from core.run_state import has_checkpoint, load_parameters, read_checkpoint, restore_rng, save_checkpoint
from core.seed import spawn_rng
from dataset.base import ArrayDataset, steps_per_epoch, train_iterator
from training_strategy.base import BaseTrainingStrategy, StrategyContext
from training_strategy.data_parallel import DataParallel, run_passes
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

    #: the keys of ``state_dict()`` (what a checkpoint record must hold)
    STATE_KEYS = (
        "epoch",
        "global_step",
        "skipped_steps",
        "history",
        "rng",
        "iterator",
        "solver",
        "policy",
        "arch_parameters",
        "stopped",
    )

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
        strategy_context: Mapping[str, Any] | None = None,
    ):
        self.network, self.criterion, self.cfg, self.policy = network, criterion, cfg, policy
        self.train_data, self.valid_data = train_data, valid_data
        self.rng, self.io, self.tag, self.eval_batch_size = rng, io, tag, eval_batch_size
        self.mini_batch = cfg.mini_batch or cfg.batch_size
        self.accum = cfg.batch_size // self.mini_batch
        full = steps_per_epoch(train_data, cfg.batch_size)
        self.steps_per_epoch = min(full, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else full
        self.context = StrategyContext(
            criterion,
            spawn_rng(rng),
            io.logger,
            io.monitor,
            self.mini_batch,
            augment,
            train_data=train_data,
            epochs=cfg.epochs,
            **(strategy_context or {}),
        )
        self.policy.setup(network, self.context)
        self.solver = GroupedSolver(policy.weight_groups(network), cfg.optimizer)
        self.scheduler = make_scheduler(cfg, self.steps_per_epoch)
        self.iterator = train_iterator(train_data, self.mini_batch, spawn_rng(rng), augment)
        self.epoch = 0
        self.global_step = 0
        self.skipped_steps = 0
        #: the policy ended the training early (``end_epoch``); kept in the checkpoint
        self.stopped = False
        self.last_checkpoint_epoch: int | None = None
        self.history: List[Dict[str, float]] = []
        self._graph_key: Any = object()
        self._graph: tuple | None = None
        #: ``workers`` > 1: the step's accumulated passes run side by side (training_strategy/data_parallel.py)
        self.parallel = DataParallel(cfg.workers) if cfg.workers > 1 and self.accum > 1 else None

    def _build_graph(self) -> tuple:
        key = self.policy.graph_key(self.network)
        if self._graph is None or key != self._graph_key:
            self._graph = self.context.loss_graph(self.network, self.mini_batch, self.train_data.images.shape[1:])
            self._graph_key = key
        return self._graph

    def train_step(self) -> Dict[str, float]:
        """One optimizer step over ``batch_size`` samples (``batch_size / mini_batch`` accumulated passes).

        A policy may run several configurations on the step's batch (``policy.passes``): their gradients are
        summed, the loss and accuracy averaged. A non-finite loss or gradient norm never reaches the weights:
        the step stops the run (``on_nan: stop``, the last checkpoint stays intact) or is skipped
        (``on_nan: skip``).
        """
        self.network.training = True
        nn.random.seed(int(self.rng.integers(0, 2**31 - 1)))  # dropout etc. replay exactly after a resume
        self.policy.before_step(self.network, self.epoch, self.global_step, self.rng)
        active = self.policy.active_groups(self.network)
        self.solver.zero_grad(active)
        loss_sum, correct, batches, passes = 0.0, 0, [], 0
        for _ in self.policy.passes(self.network):
            graph = self._build_graph()
            if passes == 0:
                batches = [self.iterator.next() for _ in range(self.accum)]
            if self.parallel is None:
                pass_loss, pass_correct = run_passes(*graph, batches)
            else:
                pass_loss, pass_correct = self.parallel.run(graph, batches, self.rng)
            loss_sum, correct, passes = loss_sum + pass_loss, correct + pass_correct, passes + 1
        if passes == 0:
            raise RuntimeError(f"{type(self.policy).__name__}.passes() set up no pass for the step")
        lr = self.scheduler.get_learning_rate(self.global_step)
        norm = self.solver.prepare(active, grad_scale=1.0 / self.accum)
        metrics = {
            "loss": loss_sum / (self.accum * passes),
            "accuracy": correct / (self.cfg.batch_size * passes),
            "lr": lr,
            "grad_norm": norm,
        }
        if math.isfinite(metrics["loss"]) and math.isfinite(norm):
            self.solver.update(active, lr, norm, clip=self.cfg.grad_clip)
            self.policy.after_step(self.network, self.epoch, self.global_step, self.rng)
        else:
            self._non_finite(metrics)
        self.global_step += 1
        return metrics

    def _non_finite(self, metrics: Mapping[str, float]) -> None:
        """Stop (default) or skip a step whose loss or gradient norm is NaN/inf."""
        what = "loss" if not math.isfinite(metrics["loss"]) else "gradient norm"
        step = self.global_step - self.epoch * self.steps_per_epoch + 1
        where = f"[{self.tag}] non-finite {what} (loss {metrics['loss']:.4g}, gradient norm {metrics['grad_norm']:.4g})"
        where += f" at epoch {self.epoch + 1}, step {step}"
        if self.cfg.on_nan == "skip":
            self.skipped_steps += 1
            self.io.logger.warning("%s: step skipped (train.on_nan: skip)", where)
            return
        if self.last_checkpoint_epoch is None:
            tail = "no checkpoint was written yet"
        else:
            tail = f"the checkpoint of epoch {self.last_checkpoint_epoch} is intact and resumes with --resume"
        raise TrainingDivergedError(f"{where}: stopped ({tail}); lower the learning rate or set train.on_nan: skip")

    def run(self) -> List[Dict[str, float]]:
        """Train for the remaining epochs, or until the policy stops the training (``end_epoch``); returns one metrics
        dict per epoch."""
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
        if self.stopped:
            log.info(
                "[%s] the training strategy stopped training after epoch %d: nothing to train", self.tag, self.epoch
            )
        while self.epoch < self.cfg.epochs and not self.stopped:
            sums: Dict[str, float] = {"loss": 0.0, "accuracy": 0.0}
            skipped_before = self.skipped_steps
            bar = tqdm(
                range(self.steps_per_epoch),
                desc=f"{self.tag} {self.epoch + 1}/{self.cfg.epochs}",
                disable=not self.io.progress,
                leave=False,
                dynamic_ncols=True,
            )
            for _ in bar:
                m = self.train_step()
                if math.isfinite(m["loss"]):
                    sums["loss"] += m["loss"]
                    sums["accuracy"] += m["accuracy"]
                bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}")
                if self.global_step % self.cfg.log_every == 0:
                    self.io.monitor.scalars(f"{self.tag}/train_step", m, self.global_step)
            bar.close()
            trained = self.steps_per_epoch - (self.skipped_steps - skipped_before)
            if trained == 0:
                raise TrainingDivergedError(
                    f"[{self.tag}] every step of epoch {self.epoch + 1} had a non-finite loss or gradient; stopped"
                )
            epoch_m = {k: v / trained for k, v in sums.items()}
            if self.skipped_steps > skipped_before:
                epoch_m["skipped_steps"] = self.skipped_steps - skipped_before
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
            if self.policy.end_epoch(self.network, self.epoch):
                self.stopped = True
                log.info(
                    "[%s] the training strategy stopped training after epoch %d of %d",
                    self.tag,
                    self.epoch,
                    self.cfg.epochs,
                )
            if self.io.checkpoint_dir and (
                self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs or self.stopped
            ):
                self.save_checkpoint(self.io.checkpoint_dir)
        if self.parallel is not None:
            self.parallel.close()
        return self.history

    def state_dict(self) -> Dict[str, Any]:
        """Everything but the weights that the rest of the training depends on (arrays allowed as leaves)."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "skipped_steps": self.skipped_steps,
            "history": self.history,
            "rng": self.rng.bit_generator.state,
            "iterator": self.iterator.state_dict(),
            "solver": self.solver.state_dict(),
            "policy": self.policy.state_dict(),
            "arch_parameters": {k: v.d.copy() for k, v in self._arch_parameters().items()},
            "stopped": self.stopped,
        }

    def _arch_parameters(self) -> Mapping[str, nn.Variable]:
        """The network's architecture parameters (none for a standalone network)."""
        get = getattr(self.network, "arch_parameters", None)
        return get() if get is not None else {}

    def load_state_dict(self, state: Mapping[str, Any], what: str | None = None) -> None:
        """Restore ``state_dict`` output; a damaged state is a CheckpointError naming ``what`` (the record)."""
        what = what or f"{self.tag} checkpoint"
        try:
            self.solver.load_state_dict(state["solver"])
            self.iterator.load_state_dict(state["iterator"])
            self.policy.load_state_dict(state["policy"])
            alphas = self._arch_parameters()
            if set(state["arch_parameters"]) != set(alphas):
                raise ValueError("its architecture parameters are not the network's labels")
            for label, value in state["arch_parameters"].items():
                if np.shape(value) != alphas[label].shape:
                    raise ValueError(f"architecture parameter {label!r} has shape {np.shape(value)}")
                alphas[label].d = value
            restore_rng(self.rng, state["rng"], what)
            self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
            self.skipped_steps, self.history = int(state["skipped_steps"]), list(state["history"])
            self.stopped = bool(state["stopped"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{what}: damaged state ({type(err).__name__}: {err})") from None
        self.last_checkpoint_epoch = self.epoch

    def save_checkpoint(self, directory: str) -> None:
        """Weights and the whole loop state of this epoch, committed atomically (see core.run_state)."""
        save_checkpoint(
            directory, self.tag, self.epoch, self.network.get_parameters(grad_only=False), self.state_dict()
        )
        self.last_checkpoint_epoch = self.epoch

    def has_checkpoint(self, directory: str | None) -> bool:
        """Whether ``directory`` holds a checkpoint of this loop's tag."""
        return has_checkpoint(directory, self.tag)

    def load_checkpoint(self, directory: str) -> None:
        """Resume from ``save_checkpoint`` output; a damaged or mismatched checkpoint is one CheckpointError."""
        ckpt = read_checkpoint(directory, self.tag)
        load_parameters(self.network.get_parameters(grad_only=False), ckpt.params_path, what=f"{self.tag} network")
        self.load_state_dict(ckpt.state, what=ckpt.record_path)
        if self.epoch != ckpt.epoch:
            raise CheckpointError(
                f"{ckpt.record_path}: damaged checkpoint record (it names epoch {ckpt.epoch}, its state is of epoch "
                f"{self.epoch})"
            )
        if self.epoch > self.cfg.epochs:
            raise CheckpointError(
                f"{ckpt.record_path}: the {self.tag} checkpoint of epoch {self.epoch} is past the {self.cfg.epochs} "
                f"configured epochs; resume with at least {self.epoch} epochs"
            )
