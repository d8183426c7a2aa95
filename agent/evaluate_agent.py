"""Evaluate agent: retrain a given searched architecture from scratch, test and export it."""

import os
from typing import Any, Dict

from agent.base import BaseAgent
from agent.retrain import retrain_and_test
from core.errors import ConfigError
from core.registries import AGENTS
from search_space.choices import decode_arch


@AGENTS.register("evaluate")
class EvaluateAgent(BaseAgent):
    """Reads ``evaluate.arch_path`` (a searched_arch.json), retrains it, writes metrics.json."""

    def run(self) -> Dict[str, Any]:
        path = self.config.evaluate.arch_path
        if not path or not os.path.isfile(path):
            raise ConfigError(f"evaluate.arch_path: file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            arch = decode_arch(f.read())
        metrics = {"agent": "evaluate", "arch_path": path, **retrain_and_test(self, arch)}
        self.write_metrics(metrics)
        return metrics
