"""Evaluate agent: retrain a given searched architecture from scratch, test and export it."""

import os
from typing import Any, Dict

from agent.base import BaseAgent
from core.config import Config
from core.errors import ArchitectureError, ConfigError
from core.registries import AGENTS
from search_space.choices import decode_arch


@AGENTS.register("evaluate")
class EvaluateAgent(BaseAgent):
    """Reads ``evaluate.arch_path`` (a searched_arch.json), retrains it, writes metrics.json."""

    def __init__(self, config: Config, run_dir: str, progress: bool = True, resume: bool = False):
        super().__init__(config, run_dir, progress, resume)
        path = config.evaluate.arch_path
        if not path or not os.path.isfile(path):
            raise ConfigError(f"evaluate.arch_path: file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            try:
                arch = decode_arch(f.read())
                self.arch = self.space.choices(config.search_space, self.data.info).validate(arch)
            except ArchitectureError as err:
                raise ArchitectureError(f"evaluate.arch_path {path}: {err}") from None
        if resume:
            self.check_retrain_checkpoint()
        self.loop = self.build_retrain(self.arch)

    def run(self) -> Dict[str, Any]:
        self.plot_arch(self.arch)
        metrics = {"agent": "evaluate", "arch_path": self.config.evaluate.arch_path}
        metrics.update(self.retrain_and_test(self.arch, self.loop))
        self.write_metrics(metrics)
        return metrics
