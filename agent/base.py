"""Agent base: builds and checks every configured component, then runs; owns the run directory's files."""

import abc
import os
import sys
from typing import Any, Dict, Mapping

import numpy as np

from core.checkpoint import read_json, write_json
from core.config import Config, TrainConfig
from core.context import set_context
from core.errors import CheckpointError, ConfigError, DatasetError
from core.export import export_model, verify_export
from core.registries import CRITERIA, DATASETS, SEARCH_SPACES
from core.run_logging import Monitor, get_logger
from core.run_state import has_checkpoint, read_checkpoint
from core.seed import make_rng, seed_nnabla, spawn_rng
from core.visualize import plot_arch
from criterion.base import CriterionSetup
from dataset.base import ArrayDataset, DatasetSplits
from hardware.measure import UNITS, measure_module
from hardware.summary import network_summary
from hardware.tables import measure_settings, table_metrics
from search_space.choices import Arch
from search_space.space import SearchSpace
from training_strategy.base import BaseTrainingStrategy, FixedNetwork
from training_strategy.evaluation import evaluate_network
from training_strategy.loop import RunIO, TrainLoop

RETRAIN = "retrain"


class BaseAgent(abc.ABC):
    """Holds the config, data, search space and criterion every agent shares.

    Construction builds and validates everything a run needs and writes nothing (a refused run leaves
    no trace); ``run`` does the work and writes the run directory.
    """

    #: whether the agent trains a supernet (told to the criterion, e.g. an in-place distillation teacher)
    trains_supernet: bool = False

    def __init__(self, config: Config, run_dir: str, progress: bool = True, resume: bool = False):
        self.config, self.run_dir, self.resume = config, run_dir, resume
        self.logger = get_logger()
        self.monitor = Monitor(run_dir)
        # bars only on a terminal: redirected output gets the per-epoch log lines, not thousands of \r frames
        self.io = RunIO(
            self.logger, self.monitor, os.path.join(run_dir, "checkpoints"), progress and sys.stderr.isatty()
        )
        set_context(config.context, config.device_id)
        self.rng = make_rng(config.seed)
        seed_nnabla(self.rng)
        agent = config.agent
        self.space: SearchSpace = SEARCH_SPACES.get(agent.search_space_agent)
        self.criterion = CRITERIA.get(agent.criterion_agent)(config.criterion)
        self.data: DatasetSplits = DATASETS.get(agent.dataset_agent)(config.dataset).load()
        self.augment = bool(getattr(config.dataset, "augment", False))
        self._check_data()
        self.criterion.setup(
            CriterionSetup(
                data=self.data.info,
                space=self.space,
                space_params=config.search_space,
                dataset_name=agent.dataset_agent,
                dataset_params=config.dataset,
                trains_supernet=self.trains_supernet,
                logger=self.logger,
            )
        )

    def _check_data(self) -> None:
        """Refuse data that cannot support a search: one class, or a split smaller than one batch."""
        info, data = self.data.info, self.data
        name = self.config.agent.dataset_agent
        present = np.unique(data.train.labels).size
        if info.num_classes < 2 or present < 2:
            raise DatasetError(
                f"dataset {name}: {max(present, info.num_classes) if info.num_classes < 2 else present} class(es) "
                "in the train split; classification needs at least two"
            )
        self.logger.info(
            "data %s: %d train / %d valid / %d test, %d classes, %dx%dx%d",
            name,
            len(data.train),
            len(data.valid),
            len(data.test),
            info.num_classes,
            info.in_channels,
            info.input_size,
            info.input_size,
        )
        self.check_batch("retrain", self.config.retrain, len(data.train) + len(data.valid), "train + valid")

    def check_batch(self, section: str, cfg: TrainConfig, samples: int, split: str) -> None:
        """ConfigError when a batch would need more samples than the split has (samples would repeat)."""
        if cfg.batch_size > samples:
            raise ConfigError(
                f"{section}.batch_size: {cfg.batch_size} exceeds the {samples} samples of the {split} split; "
                f"use at most {samples}"
            )

    def start(self, loop: TrainLoop) -> TrainLoop:
        """Continue ``loop`` from its checkpoint when resuming a run that has one (of the same architecture)."""
        if self.resume and loop.has_checkpoint(self.io.checkpoint_dir):
            saved = read_checkpoint(self.io.checkpoint_dir, loop.tag).state.get("policy", {}).get("arch")
            ours = getattr(loop.policy, "arch", None)
            if ours is not None and saved != ours:  # the search found another architecture since (longer training)
                self.logger.info("[%s] set aside the checkpoint of %s; training %s from scratch", loop.tag, saved, ours)
                return loop
            loop.load_checkpoint(self.io.checkpoint_dir)
            self.logger.info("[%s] resumed after epoch %d", loop.tag, loop.epoch)
        return loop

    def make_loop(
        self,
        network: Any,
        cfg: TrainConfig,
        policy: BaseTrainingStrategy,
        data: ArrayDataset,
        tag: str,
        strategy_context: Mapping[str, Any] | None = None,
        rng: np.random.Generator | None = None,
    ) -> TrainLoop:
        """A training loop over ``data`` with the run's criterion and IO, resumed from its checkpoint if any; its
        generator is spawned from ``rng`` (default: the run's)."""
        loop = TrainLoop(
            network,
            self.criterion,
            data,
            cfg,
            policy,
            spawn_rng(self.rng if rng is None else rng),
            self.io,
            tag=tag,
            augment=self.augment,
            eval_batch_size=self.config.search.eval_batch_size,
            strategy_context=strategy_context,
        )
        return self.start(loop)

    def check_retrain_checkpoint(self) -> None:
        """On resume, refuse now (before anything runs) a retrain checkpoint that is damaged, past
        ``retrain.epochs``, or missing although ``metrics.json`` records the retrain it would have left."""
        directory = self.io.checkpoint_dir
        if has_checkpoint(directory, RETRAIN):
            ckpt = read_checkpoint(directory, RETRAIN)
            missing = sorted(set(TrainLoop.STATE_KEYS) - set(ckpt.state))
            if missing:
                raise CheckpointError(f"{ckpt.record_path}: damaged checkpoint record (no state key {missing[0]!r})")
            if ckpt.epoch > self.config.retrain.epochs:
                raise ConfigError(
                    f"retrain.epochs: {self.config.retrain.epochs} is below the {ckpt.epoch} epochs of the retrain "
                    "checkpoint; a resume may add epochs, not remove them"
                )
            return
        try:
            finished = "test_accuracy" in read_json(self.path("metrics.json"))
        except (OSError, ValueError, TypeError):  # no (readable) metrics: no retrain finished here
            finished = False
        if finished:
            record = os.path.join(directory, f"{RETRAIN}_state.json")
            raise CheckpointError(
                f"{record}: missing, but metrics.json records a finished retrain; restore the checkpoint "
                "(or delete metrics.json to retrain from scratch)"
            )

    def child_rng(self) -> np.random.Generator:
        """An independent generator for one stage, reproducible from the run's seed."""
        return spawn_rng(self.rng)

    def path(self, name: str) -> str:
        """A file in the run directory."""
        return os.path.join(self.run_dir, name)

    def write_metrics(self, metrics: Dict[str, Any]) -> None:
        """Write ``metrics.json``."""
        write_json(self.path("metrics.json"), metrics)

    def plot_arch(self, arch: Arch) -> None:
        """``arch.png``: the whole network of ``arch`` with channels, stride and cost per block."""
        rows = network_summary(self.space, self.config.search_space, self.data.info, arch)
        choices = self.space.choices(self.config.search_space, self.data.info)
        names = sorted({str(v) for c in choices.values() for v in c.values})  # colours stable across archs
        plot_arch(rows, self.path("arch.png"), title=self.space.name, candidates=names)

    def build_retrain(
        self, arch: Mapping[str, Any], tag: str = RETRAIN, rng: np.random.Generator | None = None
    ) -> TrainLoop:
        """The standalone network of ``arch`` (fresh weights) and its training loop on train + valid, checkpointed
        as ``tag``; weights and loop generator are spawned from ``rng`` (default: the run's)."""
        cfg = self.config
        rng = self.rng if rng is None else rng
        arch = self.space.choices(cfg.search_space, self.data.info).validate(arch)
        seed_nnabla(spawn_rng(rng))  # fresh weights are the same whatever ran before (or was resumed)
        model = self.space.build_model(cfg.search_space, self.data.info, arch)
        train = ArrayDataset.concat(self.data.train, self.data.valid)
        return self.make_loop(model, cfg.retrain, FixedNetwork(arch), train, tag, rng=rng)

    def retrain_and_test(self, arch: Mapping[str, Any], loop: TrainLoop, export: bool = True) -> Dict[str, Any]:
        """Train ``loop``'s standalone network and test it; with ``export`` (and ``evaluate.export_nnp``) also
        export model.nnp/model.onnx and verify them."""
        cfg, data, model = self.config, self.data, loop.network
        shape = data.train.images.shape[1:]
        hw = cfg.hardware
        metrics = table_metrics(hw.info_metric)
        cost = measure_module(model, shape, metrics, measure_settings(hw))  # what the table predicted, measured
        self.logger.info("retraining %s: %s", dict(arch), ", ".join(f"{m} {cost[m]:.6g} {UNITS[m]}" for m in metrics))
        history = loop.run()
        test = evaluate_network(model, data.test, cfg.search.eval_batch_size, criterion=self.criterion)
        self.monitor.scalars(f"{loop.tag}/test", test, cfg.retrain.epochs)
        self.logger.info("test accuracy %.4f (loss %.4f)", test["accuracy"], test["loss"])
        out: Dict[str, Any] = {
            "arch": dict(arch),
            **{m: cost[m] for m in metrics},
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "final_train": history[-1] if history else {},
        }
        if export and cfg.evaluate.export_nnp:
            out["export"] = self.export(model, shape)
        return out

    def export(self, model: Any, shape: tuple) -> Dict[str, Any]:
        """model.nnp and model.onnx taking raw (unnormalised) images; checked against the live network."""
        data = self.data
        nnp, onnx = self.path("model.nnp"), self.path("model.onnx")
        export_model(model, shape, data.mean, data.std, nnp, onnx)
        raw = data.test.images[:64] * np.asarray(data.std, np.float32).reshape(1, -1, 1, 1)
        raw += np.asarray(data.mean, np.float32).reshape(1, -1, 1, 1)
        diffs = verify_export(model, raw, data.mean, data.std, nnp, onnx)
        self.logger.info(
            "exported model.nnp / model.onnx (input: raw images; max |diff| vs the live network: %s)",
            ", ".join(f"{k} {v:.2e}" for k, v in diffs.items() if v is not None),
        )
        return {"input": "raw images (normalisation inside the graph)", "mean": data.mean, "std": data.std, **diffs}

    @abc.abstractmethod
    def run(self) -> Dict[str, Any]:
        """Execute the agent; returns the metrics written to ``metrics.json``."""

    def close(self) -> None:
        """Flush logs."""
        self.monitor.close()
