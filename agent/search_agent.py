"""Search agent: train the supernet, search it under the hardware budget, save the arch, retrain it."""

import dataclasses
import os
import time
from typing import Any, Dict, Mapping, Tuple

import numpy as np
from tqdm import tqdm

from agent.base import BaseAgent
from agent.retrain_list import RetrainList, check_record
from agent.search_journal import SearchJournal
from core.checkpoint import atomic_path, write_json
from core.config import Config
from core.errors import ConfigError
from core.registries import AGENTS, SEARCH_STRATEGIES, TRAINING_STRATEGIES
from core.run_state import file_digest
from core.suggest import did_you_mean
from core.visualize import plot_pareto, plot_search, search_curves
from hardware.measure import MEASURED_METRICS, measure_module
from hardware.tables import measure_settings, obtain_lookup_table
from search_space.base_lookup_table import BaseLookUpTable
from search_space.choices import Arch
from search_strategy.base import Budget, Evaluate, SearchResult
from search_strategy.differentiable import derive_arch
from search_strategy.random_search import RandomSearch, RandomSearchParams
from training_strategy.evaluation import evaluate_network, recalibrate_bn

SUPERNET = "supernet"
RANDOM_BASELINE = "random_baseline"
JOURNAL = "search_journal.jsonl"
LOOKUP_TABLE = "lookup_table.json"
#: architectures measured whole, best first, to find one within a measured budget
MEASURED_CHECKS = 10


@AGENTS.register("search")
class SearchAgent(BaseAgent):
    """Supernet training -> search -> ``searched_arch.json`` -> (optionally) retrain from scratch and test."""

    trains_supernet = True

    def __init__(self, config: Config, run_dir: str, progress: bool = True, resume: bool = False):
        super().__init__(config, run_dir, progress, resume)
        cfg, info = config, self.data.info
        self.supernet = self.space.build_supernet(cfg.search_space, info)
        choices = self.supernet.choices()
        self.logger.info(
            "search space %s: %d decisions, %.3g architectures", self.space.name, len(choices), choices.size()
        )
        hw = cfg.hardware
        if resume and os.path.exists(self.path(LOOKUP_TABLE)):  # a resumed search prices with the run's own table
            hw = dataclasses.replace(hw, lookup_table=self.path(LOOKUP_TABLE), on_mismatch="refuse")
        self.lut = obtain_lookup_table(
            self.space, cfg.search_space, info, hw, cfg.context, self.logger, self.io.progress
        )
        if getattr(self.lut, "path_gates", None):  # cell edges a node does not take are not trained in a step
            self.supernet.set_gates(self.lut.path_gates)
        self.budget = self._budget(self.lut)
        self.strategy = SEARCH_STRATEGIES.get(cfg.agent.search_strategy_agent)(cfg.search_strategy)
        self._check_objective()
        self.policy = TRAINING_STRATEGIES.get(cfg.agent.training_strategy_agent)(cfg.training_strategy)
        if getattr(self.strategy, "needs_arch_probabilities", False) and not self.policy.learns_arch_parameters:
            raise ConfigError(
                f"agent.search_strategy_agent: {cfg.agent.search_strategy_agent} reads learned architecture "
                f"parameters, which {cfg.agent.training_strategy_agent!r} does not train; "
                "use training_strategy_agent: differentiable"
            )
        weight_data, arch_data = self.policy.split_train(self.data.train, self.child_rng())
        self.check_batch("train", cfg.train, len(weight_data), "weight-training part of the train")
        if arch_data is not None:
            self.check_batch("train", cfg.train, len(arch_data), "architecture part of the train")
        extras = {
            "arch_data": arch_data,
            "cost_model": self.lut.cost_model(cfg.hardware.info_metric),
            "target": cfg.hardware.target_hc,
        }
        self.loop = self.make_loop(self.supernet, cfg.train, self.policy, weight_data, SUPERNET, extras)
        self.journal_path = os.path.join(self.io.checkpoint_dir, JOURNAL)
        k = cfg.search.random_baseline
        fitting = self.budget.sampler(choices).feasible(limit=k) if k else None
        if fitting is not None and len(fitting) < k:
            raise ConfigError(
                f"search.random_baseline: {k} distinct architectures asked, but the budget admits only {len(fitting)}; "
                "lower it or raise hardware.target_hc"
            )
        if resume:  # damaged files of later stages are refused before anything runs
            if os.path.isfile(self.journal_path):
                SearchJournal.read(self.journal_path)
            self.check_retrain_checkpoint()
            check_record(self.io.checkpoint_dir, RANDOM_BASELINE)

    def metric_names(self) -> tuple:
        """The metrics ``evaluate(arch)`` reports: supernet accuracy plus every lookup-table cost."""
        return ("accuracy", *self.lut.metrics)

    def _check_objective(self) -> None:
        objective = getattr(self.strategy.params, "objective", None)
        if objective is not None and objective not in self.metric_names():
            raise ConfigError(
                f"search_strategy.objective: {objective!r} is not a metric the search measures"
                f"{did_you_mean(objective, self.metric_names())}; valid: {', '.join(self.metric_names())}"
            )

    def _budget(self, lut: BaseLookUpTable) -> Budget:
        """The budget metric's cost model, with the target if there is one (a multi-objective search trades the
        objective against this cost even without a target)."""
        hw = self.config.hardware
        model = lut.cost_model(hw.info_metric)
        if hw.target_hc is None:
            return Budget(hw.info_metric, None, additive=model)
        cheapest = model.min_cost()
        if cheapest > hw.target_hc:
            raise ConfigError(
                f"hardware.target_hc: {hw.target_hc:g} is below the cheapest architecture's "
                f"{hw.info_metric} ({cheapest:.0f}); raise it or shrink the space"
            )
        return Budget(hw.info_metric, hw.target_hc, additive=model)

    def run(self) -> Dict[str, Any]:
        """Train the supernet, search it, save what was found, retrain it (``search.retrain``); metrics.json."""
        t0 = time.time()
        self.train_supernet()
        t1 = time.time()
        result = self.search()
        arch, measured = self.pick(result)
        t2 = time.time()
        metrics = self.save_search(result, arch, measured)
        metrics["seconds"] = {"supernet_training": t1 - t0, "search": t2 - t1}
        if self.config.search.retrain:
            metrics.update(self.retrain(arch))
            metrics["seconds"]["retrain"] = time.time() - t2
        self.write_metrics(metrics)
        return metrics

    def train_supernet(self) -> None:
        """Write lookup_table.json and train the supernet (from its checkpoint when resuming)."""
        self.lut.save(self.path(LOOKUP_TABLE))
        self.loop.run()

    def save_search(self, result: SearchResult, arch: Arch, measured: Mapping[str, Any]) -> Dict[str, Any]:
        """searched_arch.json, search_history.json, the strategy's own files, pareto.json (multi-objective),
        the pictures; returns the search's metrics."""
        cfg = self.config
        costs = {m: self.lut.predict(arch, m) for m in self.lut.metrics}
        self.logger.info("searched architecture %s", arch)
        self.logger.info(
            "supernet valid accuracy %.4f, %s",
            result.best_metrics.get("accuracy", float("nan")),
            ", ".join(f"{k}={v:.0f}" for k, v in costs.items()),
        )
        write_json(
            self.path("searched_arch.json"),
            {
                "search_space": self.space.name,
                "arch": arch,
                "supernet_metrics": result.best_metrics,
                **costs,
                **measured,
                "target_hc": cfg.hardware.target_hc,
                "info_metric": cfg.hardware.info_metric,
            },
        )
        write_json(self.path("search_history.json"), result.to_dict())
        for name, content in result.artifacts.items():  # a strategy's own files, e.g. a trained generator.npz
            with atomic_path(self.path(os.path.basename(name))) as tmp, open(tmp, "wb") as f:
                f.write(content)
            self.logger.info("search strategy wrote %s", os.path.basename(name))
        if result.front is not None:
            write_json(
                self.path("pareto.json"),
                {"objective": self.strategy.params.objective, "cost": cfg.hardware.info_metric,
                 "front": result.to_dict()["front"]},
            )  # fmt: skip
            self.logger.info("Pareto front: %d architectures (pareto.json)", len(result.front))
        self._plot(result)
        return {
            "agent": cfg.agent.main_agent,
            "search_space": self.space.name,
            "arch": arch,
            "supernet_valid_accuracy": result.best_metrics.get("accuracy"),
            **costs,
            **measured,
            "target_hc": cfg.hardware.target_hc,
            "evaluations": result.evaluations,
        }

    def retrain(self, arch: Arch) -> Dict[str, Any]:
        """Retrain ``arch`` from scratch, test and export it, then the random baseline (``search.random_baseline``);
        the metrics metrics.json keeps of them."""
        retrained = self.retrain_and_test(arch, self.build_retrain(arch))
        metrics = {
            "test_accuracy": retrained["test_accuracy"],
            "test_loss": retrained["test_loss"],
            "model_flops": retrained["flops"],
            "model_params": retrained["params"],
            "export": retrained.get("export"),
        }
        if self.config.search.random_baseline:
            metrics["random_baseline"] = self.random_baseline(retrained["test_accuracy"])
        return metrics

    def random_baseline(self, found: float) -> Dict[str, Any]:
        """``search.random_baseline`` distinct random in-budget architectures, drawn as the ``random`` strategy
        draws them (its uniform in-budget sampler, the run's rng), retrained and tested like the found one."""
        k = self.config.search.random_baseline
        choices = self.supernet.choices()
        draws = RandomSearch(RandomSearchParams(samples=k)).search(choices, _unscored, self.budget, self.child_rng())
        archs = [e["arch"] for e in draws.history]
        results = RetrainList(self, RANDOM_BASELINE, archs, self.child_rng()).run()
        accuracies = [r["test_accuracy"] for r in results]
        mean, std = float(np.mean(accuracies)), float(np.std(accuracies, ddof=1))
        self.logger.info(
            "search %.2f %% vs random %.2f ± %.2f %% over %d", 100 * found, 100 * mean, 100 * std, len(accuracies)
        )
        return {
            "archs": [r["arch"] for r in results],
            "accuracies": accuracies,
            "mean": mean,
            "std": std,
            "found": found,
            "delta": found - mean,
        }

    def pick(self, result: SearchResult) -> Tuple[Arch, Dict[str, Any]]:
        """Under a measured budget (latency, memory), the best architecture whose whole network *measures* within
        it: the search's best first, then the next best, up to ``MEASURED_CHECKS`` (a table predicts, the machine
        decides). Returns the architecture and ``{"measured_<metric>": value, "measured_within_budget": bool}``."""
        hw = self.config.hardware
        if hw.info_metric not in MEASURED_METRICS or hw.target_hc is None:
            return result.best_arch, {}
        metric, key = hw.info_metric, f"measured_{hw.info_metric}"
        objective = self.strategy.params.objective
        ranked = sorted(result.history, key=lambda e: -e["metrics"].get(objective, float("-inf")))
        shape = self.data.train.images.shape[1:]
        first = None
        for rank, entry in enumerate(ranked[:MEASURED_CHECKS]):
            model = self.space.build_model(self.config.search_space, self.data.info, entry["arch"])
            value = measure_module(model, shape, [metric], measure_settings(hw))[metric]
            self.logger.info(
                "measured %s of the #%d architecture: %.6g (table %.6g, target %.6g)",
                metric, rank + 1, value, self.lut.predict(entry["arch"], metric), hw.target_hc,
            )  # fmt: skip
            first = first or (entry["arch"], value)
            if value <= hw.target_hc:
                return entry["arch"], {key: value, "measured_within_budget": True}
        self.logger.warning(
            "none of the %d best architectures measures within %s <= %g: the table predicts low on this machine; "
            "keeping the best (recalibrate with more hardware.calibration_samples or lower the target)",
            min(len(ranked), MEASURED_CHECKS), metric, hw.target_hc,
        )  # fmt: skip
        return first[0], {key: first[1], "measured_within_budget": False}

    def _plot(self, result: SearchResult) -> None:
        """arch.png, search.png, pareto.png, and the search curves in TensorBoard."""
        hw, history = self.config.hardware, result.to_dict()["history"]
        objective = self.strategy.params.objective
        self.plot_arch(result.best_arch)
        plot_search(history, self.path("search.png"), objective=objective)
        plot_pareto(
            history,
            self.path("pareto.png"),
            objective=objective,
            metric=hw.info_metric,
            target=hw.target_hc,
            chosen=result.best_arch,
        )
        curves = search_curves(history, objective)
        for name, values in curves["series"].items():
            for step, value in zip(curves["step"], values):
                self.monitor.scalars(f"search_{curves['by']}", {name: value}, int(step))

    def evaluator(self) -> Evaluate:
        """``evaluate(arch)``: the metrics of ``arch`` in the trained supernet, as the search scores a candidate —
        set_active, BatchNorm recalibration, validation accuracy, plus every lookup-table cost."""
        cfg, supernet, lut = self.config.search, self.supernet, self.lut
        # the same recalibration batches for every candidate: comparisons are paired, and an evaluation
        # depends on nothing but the weights and the architecture (so the journal can stand in for it)
        recal_seed = int(self.child_rng().integers(0, 2**63 - 1))
        batch = min(self.config.train.batch_size, len(self.data.train))

        def evaluate(arch: Arch) -> Mapping[str, float]:
            supernet.set_active(arch)
            recal = np.random.default_rng(recal_seed)
            recalibrate_bn(supernet, self.data.train, batch, cfg.bn_recalibration_batches, recal)
            m = evaluate_network(supernet, self.data.valid, cfg.eval_batch_size, cfg.valid_batches)
            return {**m, **{k: lut.predict(arch, k) for k in lut.metrics}}

        return evaluate

    def search(self) -> SearchResult:
        """Run the search strategy on the trained supernet, journaled so a killed search resumes mid-way."""
        supernet, lut = self.supernet, self.lut
        rng = self.child_rng()
        evaluate = self.evaluator()
        hints: Dict[str, Any] = {}
        learned = None
        if self.policy.learns_arch_parameters:
            hints["probabilities"] = {k: d.probabilities().tolist() for k, d in supernet.decisions().items()}
            hints["exclude"] = zero_candidates(supernet)  # a derived network never picks "no operation"
            hints["gates"] = getattr(lut, "gates", {})  # cell edges: inputs ranked with their operation's weight
            learned = derive_arch(supernet.choices(), **hints)
            self.logger.info("learned architecture %s", learned)
        supernet.set_mode("sample")  # candidates are scored alone, whatever the training computed
        journal = SearchJournal(self.journal_path, self._journal_identity())
        self.logger.info("search: %s", journal.open(self.resume))
        bar = tqdm(desc="search", unit="arch", disable=not self.io.progress, dynamic_ncols=True, leave=False)

        def progress(info: Mapping[str, Any]) -> None:
            bar.update(1)
            best = info.get("best_objective")
            if best is not None:
                bar.set_postfix(best=f"{best:.4f}")
                self.monitor.scalars("search", {"best_objective": best}, info["evaluations"])

        try:
            result = self.strategy.search(
                supernet.choices(), journal.wrap(evaluate), self.budget, rng, progress, hints=hints
            )
        finally:
            bar.close()
        self.logger.info(
            "search evaluated %d architectures (%d from the journal)", result.evaluations, journal.replayed
        )
        if learned is not None and not self.budget.within(learned):
            self.logger.info(
                "the learned architecture is over budget (%s %.6g > %.6g); repaired to the most probable in-budget one",
                self.budget.metric,
                self.budget.cost_of(learned),
                self.budget.target,
            )
        return result

    def _journal_identity(self) -> Dict[str, Any]:
        """What the journaled evaluations depend on: the trained supernet and every search setting."""
        cfg = self.config.to_dict()
        params = None
        if self.loop.last_checkpoint_epoch is not None:
            params = file_digest(os.path.join(self.io.checkpoint_dir, f"{SUPERNET}_params.{self.loop.epoch}.h5"))
        return {
            "supernet_epoch": self.loop.epoch,
            "supernet_params_sha256": params,
            "seed": cfg["seed"],
            "search": cfg["search"],
            "search_strategy": [cfg["agent"]["search_strategy_agent"], cfg["search_strategy"]],
            "hardware": cfg["hardware"],
        }


def _unscored(arch: Arch) -> Mapping[str, float]:
    """The evaluation of the random baseline's draws: none (only the architectures are wanted)."""
    return {"accuracy": 0.0}


def zero_candidates(supernet: Any) -> Dict[str, list]:
    """``{label: [values]}`` of the candidates that compute nothing (the Zero op, ``is_zero``)."""
    out: Dict[str, list] = {}
    for site in supernet.mutables():
        names = getattr(site.mutable, "candidate_names", None)
        if names is None:
            continue
        zeros = {v for v, m in zip(names, site.mutable.candidates) if getattr(m, "is_zero", False)}
        if zeros:  # positions sharing a label share their candidates
            label = site.mutable.decision.label
            out[label] = sorted(zeros | set(out.get(label, [])))
    return out
