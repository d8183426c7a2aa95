"""Generate agent: a trained architecture generator answers ``hardware.target_hc`` without a new search."""

import dataclasses
import json
import os
from typing import Any, Dict

from agent.base import BaseAgent
from core.checkpoint import write_json
from core.config import Config
from core.errors import CheckpointError, ConfigError
from core.registries import AGENTS
from hardware.tables import obtain_lookup_table
from search_strategy.base import Budget
from search_strategy.generator_model import TrainedGenerator

#: the lookup table a search run leaves beside its generator.npz
LOOKUP_TABLE = "lookup_table.json"


@AGENTS.register("generate")
class GenerateAgent(BaseAgent):
    """Reads ``generate.generator_path`` (the generator.npz of an ``architecture_generator`` search), writes the
    architecture it generates for ``hardware.target_hc`` (``searched_arch.json``) and optionally retrains it.

    Everything is checked first: the file, its search space and cost metric, the costs it was trained on
    (against this run's lookup table, by default the search run's own), and that the budget admits an
    architecture.
    """

    def __init__(self, config: Config, run_dir: str, progress: bool = True, resume: bool = False):
        super().__init__(config, run_dir, progress, resume)
        cfg, hw, info = config, config.hardware, self.data.info
        path = cfg.generate.generator_path
        try:
            self.generator = TrainedGenerator.load(path)
        except CheckpointError as err:
            raise CheckpointError(f"generate.generator_path: {err}") from None
        choices = self.space.choices(cfg.search_space, info)
        if self.generator.choices != choices:
            raise ConfigError(
                f"generate.generator_path: {path} was trained on another search space "
                f"({_difference(self.generator.choices, choices)}); use the search run's search_space settings"
            )
        if self.generator.metric != hw.info_metric:
            raise ConfigError(
                f"generate.generator_path: {path} generates for {self.generator.metric} budgets, not "
                f"hardware.info_metric {hw.info_metric}"
            )
        run_table = os.path.join(os.path.dirname(os.path.abspath(path)), LOOKUP_TABLE)
        table_hw = hw
        if hw.lookup_table is None and os.path.isfile(run_table):  # the search run's table, never rewritten
            table_hw = dataclasses.replace(hw, lookup_table=run_table, on_mismatch="refuse")
        self.lut = obtain_lookup_table(self.space, cfg.search_space, info, table_hw, cfg.context, self.logger)
        model = self.lut.cost_model(hw.info_metric)
        if _plain(model.to_dict()) != _plain(self.generator.cost_model.to_dict()):
            raise ConfigError(
                f"generate.generator_path: {path} was trained on other {hw.info_metric} costs than this run's "
                f"lookup table; set hardware.lookup_table to the search run's {LOOKUP_TABLE}"
            )
        if model.min_cost() > hw.target_hc:
            raise ConfigError(
                f"hardware.target_hc: {hw.target_hc:g} is below the cheapest architecture's "
                f"{hw.info_metric} ({model.min_cost():.0f}); raise it"
            )
        self.budget = Budget(hw.info_metric, hw.target_hc, additive=model)
        self.arch = self.generator.generate(self.budget, self.child_rng())
        self.loop = None
        if cfg.generate.retrain:
            if resume:
                self.check_retrain_checkpoint()
            self.loop = self.build_retrain(self.arch)

    def run(self) -> Dict[str, Any]:
        cfg, hw = self.config, self.config.hardware
        low, high = self.generator.trained_range
        if hw.target_hc > high:
            self.logger.info(
                "target %g is above the budgets the generator was trained for (up to %g): generated for %g",
                hw.target_hc, high, high,
            )  # fmt: skip
        costs = {m: self.lut.predict(self.arch, m) for m in self.lut.metrics}
        self.logger.info(
            "generated architecture for %s <= %g: %s (%s)",
            hw.info_metric, hw.target_hc, self.arch, ", ".join(f"{k}={v:.6g}" for k, v in costs.items()),
        )  # fmt: skip
        source = {"generator_path": cfg.generate.generator_path, "trained_range": [low, high]}
        write_json(
            self.path("searched_arch.json"),
            {
                "search_space": self.space.name,
                "arch": self.arch,
                **costs,
                "target_hc": hw.target_hc,
                "info_metric": hw.info_metric,
                **source,
            },
        )
        self.plot_arch(self.arch)
        metrics: Dict[str, Any] = {"agent": "generate", "arch": dict(self.arch), **costs, "target_hc": hw.target_hc}
        metrics.update(source)
        if self.loop is not None:
            retrained = self.retrain_and_test(self.arch, self.loop)
            metrics.update({k: v for k, v in retrained.items() if k != "arch"})
        self.write_metrics(metrics)
        return metrics


def _plain(data: Any) -> Any:
    """JSON round trip (tuples become lists), so saved and rebuilt cost models compare equal."""
    return json.loads(json.dumps(data))


def _difference(saved: Any, ours: Any) -> str:
    """The first label that differs between two SearchSpaceChoices, in words."""
    for label in list(saved) + list(ours):
        if label not in ours:
            return f"it has label {label!r}, this space does not"
        if label not in saved:
            return f"this space has label {label!r}, it does not"
        if saved[label] != ours[label]:
            return f"label {label!r}: {saved[label].to_json()} vs {ours[label].to_json()}"
    return "the labels are in another order"
