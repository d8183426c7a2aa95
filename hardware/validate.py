"""How well a lookup table predicts whole networks: ``python -m hardware.validate -c CONFIG --samples 50``.

Builds (or reuses, by fingerprint) the config's lookup table for the metric, measures ``--samples`` random
standalone networks end to end on this machine, and compares each with the table's prediction, raw (the sum of
the entries and the base) and calibrated (``scale * sum + offset``, fitted on other networks when the table was
built). Reports Spearman and Kendall rank correlations, MAPE, the worst error and the mean signed bias, and writes
``lut_accuracy.json``, ``lut_accuracy.png`` (predicted vs measured), ``lookup_table.json`` and ``log.txt`` into a
new directory ``<output-dir>/<title>``.
"""

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Dict, List, Sequence

import numpy as np
from tqdm import tqdm

from core.checkpoint import write_json
from core.config import Config, load_config
from core.context import set_context
from core.errors import ConfigError, NASError
from core.ranking import kendall_tau, spearman
from core.registries import DATASETS, SEARCH_SPACES
from core.run_logging import attach_log_file, get_logger, setup_logger
from core.rundir import default_title, new_run_dir
from core.visualize import plot_lut_accuracy
from hardware.measure import MEASURED_METRICS, METRICS, UNITS, environment, measure_modules
from hardware.tables import calibration_archs, measure_settings, obtain_lookup_table
from search_space.choices import Arch, arch_key

RESULT = "lut_accuracy.json"
PLOT = "lut_accuracy.png"
#: stream of the validated architectures (the calibration draws from another one, and its networks are left out)
VALIDATION_STREAM = 7


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m hardware.validate",
        description="Measure random whole networks and report how well the lookup table predicts them.",
        epilog="Overrides: any config key as dotted.path=value, e.g. hardware.runs=30 dataset.input_size=32",
    )
    p.add_argument("-c", "--config", required=True, help="YAML agent config (its space, data and hardware sections)")
    p.add_argument("--samples", type=int, default=50, help="random architectures measured whole (default 50)")
    p.add_argument(
        "--metric",
        choices=METRICS,
        help="the metric validated (default: hardware.info_metric when it is measured, else latency)",
    )
    p.add_argument("--title", help="report directory name (default: lut_accuracy-<config name>-<time>)")
    p.add_argument("--output-dir", help="parent of the report directory (default: the config's output_dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or console log")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p.parse_intermixed_args(argv)


def validation_archs(choices: Any, samples: int, seed: int, exclude: Sequence[Arch] = ()) -> List[Arch]:
    """``samples`` distinct random architectures, none of ``exclude`` (fewer when the space has fewer)."""
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    seen = {arch_key(a) for a in exclude}
    available = choices.size() - len(seen)
    archs: List[Arch] = []
    tries = 0
    while len(archs) < min(samples, available) and tries < 100 * samples:
        tries += 1
        arch = choices.sample(rng)
        if arch_key(arch) not in seen:
            seen.add(arch_key(arch))
            archs.append(arch)
    return archs


def accuracy_figures(predicted: np.ndarray, measured: np.ndarray) -> Dict[str, float]:
    """Rank correlations and relative errors of ``predicted`` against ``measured`` (both positive)."""
    rel = (predicted - measured) / measured
    return {
        "spearman": spearman(predicted, measured),  # NaN when either side is constant
        "kendall_tau": kendall_tau(predicted, measured),
        "mape": float(np.mean(np.abs(rel))),
        "max_ape": float(np.max(np.abs(rel))),
        "bias": float(np.mean(rel)),
    }


class LutValidation:
    """One accuracy report: construction builds (or reuses) the table and draws the networks, writing no report
    file; ``run(out_dir)`` measures them and writes the report."""

    def __init__(self, config: Config, samples: int, metric: str, progress: bool = True):
        if samples < 2:
            raise ConfigError(f"--samples: must be >= 2 (a rank correlation needs two networks), got {samples}")
        self.config, self.metric, self.progress = config, metric, progress
        self.logger = get_logger()
        hw = config.hardware
        if metric != hw.info_metric:  # the config's cached table holds another metric: build this one afresh
            hw = dataclasses.replace(hw, info_metric=metric, lookup_table=None)
        self.settings = measure_settings(hw)
        set_context(config.context, config.device_id)
        self.space = SEARCH_SPACES.get(config.agent.search_space_agent)
        self.info = DATASETS.get(config.agent.dataset_agent)(config.dataset).info()
        self.table = obtain_lookup_table(
            self.space, config.search_space, self.info, hw, config.context, self.logger, progress
        )
        self.calibrated = metric in self.table.calibration
        left_out = calibration_archs(self.table.choices, hw.calibration_samples) if self.calibrated else []
        self.archs = validation_archs(self.table.choices, samples, config.seed, left_out)
        if len(self.archs) < 2:
            raise ConfigError(
                f"{self.space.name}: too few architectures to validate ({len(self.archs)} besides the calibration's)"
            )

    def run(self, out_dir: str) -> Dict[str, Any]:
        """Measure every drawn network whole, compare with the table, write the report files; returns the report."""
        metric, info, table, archs = self.metric, self.info, self.table, self.archs
        shape = (info.in_channels, info.input_size, info.input_size)
        self.logger.info("measuring %d whole %s networks (%s, input %s)", len(archs), self.space.name, metric, shape)
        rounds = self.settings.rounds if metric == "latency" else 1
        bar = tqdm(total=len(archs) * rounds, desc=f"measure {metric}", unit="net", disable=not self.progress,
                   leave=False)  # fmt: skip
        models = [(self.space.build_model(self.config.search_space, info, arch), shape) for arch in archs]
        measured = measure_modules(models, [metric], self.settings, progress=lambda: bar.update(1))
        bar.close()
        real = np.asarray([m[metric] for m in measured], dtype=np.float64)
        raw = table.predict_batch(archs, metric, raw=True)
        fitted = table.predict_batch(archs, metric)
        figures = {"raw": accuracy_figures(raw, real)}
        if self.calibrated:
            figures["calibrated"] = accuracy_figures(fitted, real)
        report = {
            "search_space": self.space.name,
            "metric": metric,
            "unit": UNITS[metric],
            "samples": len(archs),
            "input": list(shape),
            "settings": dataclasses.asdict(self.settings) if metric in MEASURED_METRICS else None,
            "environment": environment(self.config.context),
            "calibration": table.calibration.get(metric),
            **figures,
            "networks": [
                {"arch": a, "measured": float(m), "predicted_raw": float(r), "predicted": float(f)}
                for a, m, r, f in zip(archs, real, raw, fitted)
            ],
        }
        table.save(os.path.join(out_dir, "lookup_table.json"))
        write_json(os.path.join(out_dir, RESULT), report)
        plot_lut_accuracy(report, os.path.join(out_dir, PLOT))
        for kind, fig in figures.items():
            self.logger.info(
                "%s %s: Spearman %.3f, Kendall %.3f, MAPE %.1f%%, worst %.1f%%, bias %+.1f%% over %d networks",
                kind, metric, fig["spearman"], fig["kendall_tau"], 100 * fig["mape"], 100 * fig["max_ape"],
                100 * fig["bias"], len(archs),
            )  # fmt: skip
        return report


def main(argv: List[str] | None = None) -> int:
    """Parse, check, build the table, then measure and report; user mistakes exit 2 with one line and leave no
    report directory."""
    args = parse_args(argv)
    t0 = time.time()
    try:
        config = load_config(args.config, args.overrides)
        hw_metric = config.hardware.info_metric
        metric = args.metric or (hw_metric if hw_metric in MEASURED_METRICS else "latency")
        title = args.title or default_title(args.config, "lut_accuracy-")
        out_dir = new_run_dir(args.output_dir or config.output_dir, title)
        setup_logger(verbose=not args.quiet)
        job = LutValidation(config, args.samples, metric, progress=not args.quiet and sys.stderr.isatty())
        os.makedirs(out_dir)
        attach_log_file(out_dir)
        report = job.run(out_dir)
    except NASError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report directory: {out_dir} ({time.time() - t0:.0f} s)")
    for kind in ("raw", "calibrated"):
        if kind in report:
            f = report[kind]
            print(
                f"{kind:>10}: Spearman {f['spearman']:.3f}  Kendall {f['kendall_tau']:.3f}  MAPE {100 * f['mape']:.1f}%"
                f"  worst {100 * f['max_ape']:.1f}%  bias {100 * f['bias']:+.1f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
