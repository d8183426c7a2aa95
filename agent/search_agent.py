"""Search agent: train the supernet, search it under the hardware budget, save the arch, retrain it."""

import time
from typing import Any, Dict, Mapping

from tqdm import tqdm

from agent.base import BaseAgent
from agent.retrain import retrain_and_test
from core.checkpoint import write_json
from core.errors import ConfigError
from core.registries import AGENTS, SEARCH_STRATEGIES, TRAINING_STRATEGIES
from search_space.base_lookup_table import BaseLookUpTable
from search_space.choices import Arch
from search_strategy.base import Budget, SearchResult
from training_strategy.evaluation import evaluate_network, recalibrate_bn
from training_strategy.loop import TrainLoop


@AGENTS.register("search")
class SearchAgent(BaseAgent):
    """Supernet training -> search -> ``searched_arch.json`` -> (optionally) retrain from scratch and test."""

    def run(self) -> Dict[str, Any]:
        cfg, info = self.config, self.data.info
        t0 = time.time()
        supernet = self.space.build_supernet(cfg.search_space, info)
        choices = supernet.choices()
        self.logger.info(
            "search space %s: %d decisions, %.3g architectures", self.space.name, len(choices), choices.size()
        )
        lut = self.space.build_lookup_table(cfg.search_space, info)
        lut.save(self.path("lookup_table.json"))
        budget = self._budget(lut)

        policy = TRAINING_STRATEGIES.get(cfg.agent.training_strategy_agent)(cfg.training_strategy)
        loop = self.start(
            TrainLoop(
                supernet,
                self.criterion,
                self.data.train,
                cfg.train,
                policy,
                self.child_rng(),
                self.io,
                tag="supernet",
                augment=self.augment,
                eval_batch_size=cfg.search.eval_batch_size,
            )
        )
        loop.run()
        t_train = time.time() - t0

        strategy = SEARCH_STRATEGIES.get(cfg.agent.search_strategy_agent)(cfg.search_strategy)
        result = self._search(supernet, lut, budget, strategy)
        t_search = time.time() - t0 - t_train
        best = result.best_arch
        costs = {m: lut.predict(best, m) for m in lut.metrics}
        self.logger.info("searched architecture %s", best)
        self.logger.info(
            "supernet valid accuracy %.4f, %s",
            result.best_metrics.get("accuracy", float("nan")),
            ", ".join(f"{k}={v:.0f}" for k, v in costs.items()),
        )
        write_json(
            self.path("searched_arch.json"),
            {
                "search_space": self.space.name,
                "arch": best,
                "supernet_metrics": result.best_metrics,
                **costs,
                "target_hc": cfg.hardware.target_hc,
                "info_metric": cfg.hardware.info_metric,
            },
        )
        write_json(self.path("search_history.json"), result.to_dict())
        metrics: Dict[str, Any] = {
            "agent": "search",
            "search_space": self.space.name,
            "arch": best,
            "supernet_valid_accuracy": result.best_metrics.get("accuracy"),
            **costs,
            "target_hc": cfg.hardware.target_hc,
            "evaluations": result.evaluations,
            "seconds": {"supernet_training": t_train, "search": t_search},
        }
        if cfg.search.retrain:
            t1 = time.time()
            retrained = retrain_and_test(self, best)
            metrics.update(
                {
                    "test_accuracy": retrained["test_accuracy"],
                    "test_loss": retrained["test_loss"],
                    "model_flops": retrained["flops"],
                    "model_params": retrained["params"],
                }
            )
            metrics["seconds"]["retrain"] = time.time() - t1
        self.write_metrics(metrics)
        return metrics

    def _budget(self, lut: BaseLookUpTable) -> Budget:
        hw = self.config.hardware
        if hw.target_hc is None:
            return Budget.unconstrained()
        cheapest = lut.base[hw.info_metric] + sum(min(row) for row in lut.info_table[hw.info_metric].values())
        if cheapest > hw.target_hc:
            raise ConfigError(
                f"hardware.target_hc: {hw.target_hc:g} is below the cheapest architecture's "
                f"{hw.info_metric} ({cheapest:.0f}); raise it or shrink the space"
            )
        return Budget(hw.info_metric, hw.target_hc, lambda arch: lut.predict(arch, hw.info_metric))

    def _search(self, supernet, lut: BaseLookUpTable, budget: Budget, strategy) -> SearchResult:
        cfg = self.config.search
        rng = self.child_rng()
        bn_rng = self.child_rng()

        def evaluate(arch: Arch) -> Mapping[str, float]:
            supernet.set_active(arch)
            recalibrate_bn(
                supernet,
                self.data.train,
                min(self.config.train.batch_size, len(self.data.train)),
                cfg.bn_recalibration_batches,
                bn_rng,
            )
            m = evaluate_network(supernet, self.data.valid, cfg.eval_batch_size, cfg.valid_batches)
            return {**m, **{k: lut.predict(arch, k) for k in lut.metrics}}

        bar = tqdm(desc="search", unit="arch", disable=not self.io.progress, dynamic_ncols=True, leave=False)

        def progress(info: Mapping[str, Any]) -> None:
            bar.update(1)
            best = info.get("best_objective")
            if best is not None:
                bar.set_postfix(best=f"{best:.4f}")
                self.monitor.scalars("search", {"best_objective": best}, info["evaluations"])

        try:
            result = strategy.search(supernet.choices(), evaluate, budget, rng, progress)
        finally:
            bar.close()
        self.logger.info("search evaluated %d architectures", result.evaluations)
        return result
