"""Agent base: builds every configured component from the registries and owns the run directory."""

import abc
import os
from typing import Any, Dict

import numpy as np

from core.checkpoint import write_json
from core.config import Config
from core.context import set_context
from core.registries import CRITERIA, DATASETS, SEARCH_SPACES
from core.run_logging import Monitor, get_logger
from core.seed import make_rng, seed_nnabla, spawn_rng
from dataset.base import DatasetSplits
from search_space.space import SearchSpace
from training_strategy.loop import RunIO, TrainLoop


class BaseAgent(abc.ABC):
    """Holds the config, run directory, data, search space and criterion shared by every agent."""

    def __init__(self, config: Config, run_dir: str, progress: bool = True, resume: bool = False):
        self.config, self.run_dir, self.resume = config, run_dir, resume
        self.logger = get_logger()
        self.monitor = Monitor(run_dir)
        self.io = RunIO(self.logger, self.monitor, os.path.join(run_dir, "checkpoints"), progress)
        set_context(config.context, config.device_id)
        self.rng = make_rng(config.seed)
        seed_nnabla(self.rng)
        agent = config.agent
        dataset = DATASETS.get(agent.dataset_agent)(config.dataset)
        self.data: DatasetSplits = dataset.load()
        self.augment = bool(getattr(config.dataset, "augment", False))
        self.space: SearchSpace = SEARCH_SPACES.get(agent.search_space_agent)
        self.criterion = CRITERIA.get(agent.criterion_agent)(config.criterion)
        info = self.data.info
        self.logger.info(
            "data %s: %d train / %d valid / %d test, %d classes, %dx%dx%d",
            agent.dataset_agent,
            len(self.data.train),
            len(self.data.valid),
            len(self.data.test),
            info.num_classes,
            info.in_channels,
            info.input_size,
            info.input_size,
        )

    def start(self, loop: TrainLoop) -> TrainLoop:
        """Continue ``loop`` from its checkpoint when resuming a run that has one."""
        if self.resume and self.io.checkpoint_dir and loop.has_checkpoint(self.io.checkpoint_dir):
            loop.load_checkpoint(self.io.checkpoint_dir)
            self.logger.info("[%s] resumed after epoch %d", loop.tag, loop.epoch)
        return loop

    def child_rng(self) -> np.random.Generator:
        """An independent generator for one stage, reproducible from the run's seed."""
        return spawn_rng(self.rng)

    def path(self, name: str) -> str:
        """A file in the run directory."""
        return os.path.join(self.run_dir, name)

    def write_metrics(self, metrics: Dict[str, Any]) -> None:
        """Write ``metrics.json``."""
        write_json(self.path("metrics.json"), metrics)

    @abc.abstractmethod
    def run(self) -> Dict[str, Any]:
        """Execute the agent; returns the metrics written to ``metrics.json``."""

    def close(self) -> None:
        """Flush logs."""
        self.monitor.close()
