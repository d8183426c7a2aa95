"""Rank-quality agent: does the trained supernet rank architectures the way training them alone does?

One-shot supernets often rank architectures poorly, and a search is only as good as that ranking. This agent
trains the supernet exactly as the search agent does (its checkpoints, its ``--resume``), picks
``rank_quality.archs`` architectures spread over the budget metric's cost range
(``search_strategy/cost_levels.py``), scores each in the supernet as the search scores a candidate, retrains
each from scratch with the ``retrain:`` settings (``agent/retrain_list.py``: resumable architecture by
architecture) and reports Kendall's tau, Spearman's rho and the top-k overlap between the two scorings.
"""

import math
import time
from typing import Any, Dict, List

from tqdm import tqdm

from agent.retrain_list import RetrainList, check_record
from agent.search_agent import SearchAgent
from core.checkpoint import write_json
from core.config import Config
from core.errors import ArchitectureError, ConfigError
from core.ranking import bootstrap_interval, kendall_tau, spearman, top_k_overlap
from core.registries import AGENTS
from core.visualize import plot_rank_quality
from search_strategy.cost_levels import spread_over_cost

RANK_QUALITY = "rank_quality"
#: how the architectures are chosen, in rank_quality.json
RULE = (
    "levels evenly spaced from the cheapest cost to the dearest (or hardware.target_hc); per level, a uniform draw "
    "among the not yet picked architectures whose cost lies within half a spacing of it (the closest drawn if none)"
)


@AGENTS.register("rank_quality")
class RankQualityAgent(SearchAgent):
    """Supernet training -> architectures spread over the cost range -> supernet score and standalone test
    accuracy of each -> ``rank_quality.json``, ``rank_quality.png``, the statistics in ``metrics.json``.

    The search strategy section is not used (nothing is searched).
    """

    def __init__(self, config: Config, run_dir: str, progress: bool = True, resume: bool = False):
        super().__init__(config, run_dir, progress, resume)
        rq, hw = config.rank_quality, config.hardware
        model, choices = self.budget.additive, self.supernet.choices()
        fitting = self.budget.sampler(choices).feasible(limit=rq.archs)
        if fitting is not None and len(fitting) < rq.archs:
            space = f"hardware.target_hc {hw.target_hc:g} admits" if hw.target_hc is not None else "the space holds"
            raise ConfigError(
                f"rank_quality.archs: {rq.archs} distinct architectures asked, but {space} only {len(fitting)}"
            )
        self.low = model.min_cost()
        self.high = model.max_cost() if hw.target_hc is None else min(hw.target_hc, model.max_cost())
        try:
            self.levels, self.archs = spread_over_cost(choices, model, self.low, self.high, rq.archs, self.child_rng())
        except ArchitectureError as err:
            raise ConfigError(f"rank_quality.archs: cannot spread {rq.archs} architectures by cost: {err}") from None
        self.retrains = RetrainList(self, RANK_QUALITY, self.archs, self.child_rng())
        if resume:
            check_record(self.io.checkpoint_dir, RANK_QUALITY)

    def run(self) -> Dict[str, Any]:
        """Train the supernet, score and retrain every picked architecture, report how the two rankings agree."""
        t0 = time.time()
        self.train_supernet()
        t1 = time.time()
        scores = self.supernet_scores()
        t2 = time.time()
        retrained = self.retrains.run()
        t3 = time.time()
        report = self.report(scores, [r["test_accuracy"] for r in retrained])
        write_json(self.path("rank_quality.json"), report)
        plot_rank_quality(report, self.path("rank_quality.png"))
        stats = report["statistics"]
        self.logger.info(
            "rank quality over %d architectures: Kendall tau %s (95 %% bootstrap interval %s to %s), Spearman %s, "
            "top-%d overlap %s (rank_quality.json, rank_quality.png)",
            len(self.archs), _show(stats["kendall_tau"]), *map(_show, stats["kendall_tau_interval"]),
            _show(stats["spearman"]), stats["top_k"],
            _show(stats["top_k_overlap"]),
        )  # fmt: skip
        figures = {k: stats[k] for k in ("kendall_tau", "spearman", "top_k_overlap") if stats[k] is not None}
        self.monitor.scalars(RANK_QUALITY, figures, 0)
        metrics = {
            "agent": self.config.agent.main_agent,
            "search_space": self.space.name,
            "rank_quality": stats,
            "seconds": {"supernet_training": t1 - t0, "supernet_scores": t2 - t1, "retrain": t3 - t2},
        }
        self.write_metrics(metrics)
        return metrics

    def supernet_scores(self) -> List[float]:
        """The supernet validation accuracy of every picked architecture, scored as the search scores one."""
        evaluate = self.evaluator()
        self.supernet.set_mode("sample")  # each architecture alone, whatever the training computed
        bar = tqdm(
            self.archs,
            desc="supernet scores",
            unit="arch",
            disable=not self.io.progress,
            dynamic_ncols=True,
            leave=False,
        )
        try:
            return [float(evaluate(arch)["accuracy"]) for arch in bar]
        finally:
            bar.close()

    def report(self, scores: List[float], accuracies: List[float]) -> Dict[str, Any]:
        """rank_quality.json: settings, statistics (None where a scoring is constant) and every architecture."""
        rq, hw = self.config.rank_quality, self.config.hardware
        stats = {
            "kendall_tau": _finite(kendall_tau(scores, accuracies)),
            #: 95 % percentile-bootstrap interval over the architectures: what a dozen of them can tell
            "kendall_tau_interval": [_finite(v) for v in bootstrap_interval(scores, accuracies)],
            "spearman": _finite(spearman(scores, accuracies)),
            "top_k_overlap": top_k_overlap(scores, accuracies, rq.top_k),
            "top_k": rq.top_k,
            "archs": len(self.archs),
        }
        model = self.budget.additive
        return {
            "search_space": self.space.name,
            "settings": {
                "archs": rq.archs,
                "top_k": rq.top_k,
                "metric": hw.info_metric,
                "target_hc": hw.target_hc,
                "cost_range": [self.low, self.high],
                "rule": RULE,
                "supernet_score": "validation accuracy in the supernet (BatchNorm recalibrated, as the search)",
                "standalone_accuracy": "test accuracy after retraining from scratch on train + valid (retrain:)",
            },
            "statistics": stats,
            "architectures": [
                {
                    "index": i,
                    "arch": arch,
                    "level": level,
                    "cost": model.cost(arch),
                    "supernet_accuracy": score,
                    "standalone_accuracy": accuracy,
                }
                for i, (arch, level, score, accuracy) in enumerate(zip(self.archs, self.levels, scores, accuracies))
            ],
        }


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined correlation (a constant scoring) is written as null."""
    return None if math.isnan(value) else value


def _show(value: float | None) -> str:
    return "undefined (a constant scoring)" if value is None else f"{value:.3f}"
