"""Run a one-shot NAS experiment from one YAML file: python main.py -c CONFIG [--title T] [key=value ...]."""

import argparse
import os
import sys
from typing import Any, Dict, List, Tuple

from core.config import Config, check_resume_changes, dump_config, load_config
from core.errors import NASError
from core.registries import AGENTS
from core.run_logging import attach_log_file, setup_logger
from core.run_state import remove_temporary_files
from core.rundir import default_title, new_run_dir


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description="Train a supernet, search it under a hardware budget, retrain and test the found network.",
        epilog="Overrides: any config key as dotted.path=value, e.g. train.epochs=1 search_strategy.generations=2",
    )
    p.add_argument("-c", "--config", help="YAML agent config (see configs/); not needed with --resume")
    p.add_argument("--title", help="run name; the run directory is <output-dir>/<title> (default: config name + time)")
    p.add_argument("--output-dir", help="parent of run directories (default: the config's output_dir, 'runs')")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in RUN_DIR from its checkpoints (its config.yaml + any overrides)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or console log (log.txt is still written)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p.parse_intermixed_args(argv)  # overrides may come before or after the flags


def resolve_run(args: argparse.Namespace) -> Tuple[Config, str]:
    """The validated config and run directory of a new run, or of the run ``--resume`` continues."""
    if args.resume:
        saved_path = os.path.join(args.resume, "config.yaml")
        if not os.path.isfile(saved_path):
            raise NASError(f"--resume {args.resume}: not a run directory (no config.yaml)")
        config = load_config(saved_path, args.overrides)
        check_resume_changes(load_config(saved_path), config)
        return config, args.resume
    if not args.config:
        raise NASError("-c CONFIG is required (or --resume RUN_DIR)")
    config = load_config(args.config, args.overrides)
    title = args.title or default_title(args.config)
    return config, new_run_dir(args.output_dir or config.output_dir, title)


def main(argv: List[str] | None = None) -> int:
    """Parse, load, validate, build, dispatch; user mistakes exit 2 with one line on stderr.

    Every component is built and checked before the run directory is touched: a bad value leaves no
    directory behind, and a refused resume leaves the run exactly as it was.
    """
    args = parse_args(argv)
    try:
        config, run_dir = resolve_run(args)
        resume = bool(args.resume)
        logger = setup_logger(verbose=not args.quiet)
        logger.info("%s %s", "resuming run" if resume else "run directory", run_dir)
        agent = AGENTS.get(config.agent.main_agent)(config, run_dir, progress=not args.quiet, resume=resume)
        if resume:
            for name in remove_temporary_files(run_dir) + remove_temporary_files(agent.io.checkpoint_dir):
                logger.info("removed %s left by an interrupted write", name)
        else:
            os.makedirs(run_dir)
        dump_config(config, os.path.join(run_dir, "config.yaml"))
        attach_log_file(run_dir)
        try:
            metrics = agent.run()
        finally:
            agent.close()
    except NASError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(metrics, run_dir))
    return 0


def summary(metrics: Dict[str, Any], run_dir: str) -> str:
    """The lines printed at the end of a run."""
    lines = [f"run directory: {run_dir}"]
    if "arch" in metrics:
        lines.append(f"architecture: {metrics['arch']}")
    keys = ("flops", "params", "latency", "measured_latency", "memory", "measured_memory", "target_hc")
    for key in (*keys, "supernet_valid_accuracy", "test_accuracy"):
        value = metrics.get(key)
        if value is not None:
            if key.endswith("accuracy"):
                lines.append(f"{key}: {value:.4f}")
            else:  # counts as integers, measured values (ms, bytes) and fractional targets as they are
                lines.append(f"{key}: {value:,.0f}" if float(value).is_integer() else f"{key}: {value:.4g}")
    baseline = metrics.get("random_baseline")
    if baseline:
        k = len(baseline["accuracies"])
        lines.append(f"random_baseline_accuracy: {baseline['mean']:.4f} ± {baseline['std']:.4f} over {k}")
    ranking = metrics.get("rank_quality")
    if ranking:
        lines += [f"{k}: {'n/a' if ranking[k] is None else f'{ranking[k]:.3f}'}" for k in ("kendall_tau", "spearman")]
        lines.append(f"top_{ranking['top_k']}_overlap: {ranking['top_k_overlap']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
