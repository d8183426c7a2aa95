"""Run a one-shot NAS experiment from one YAML file: python main.py -c CONFIG [--title T] [key=value ...]."""

import argparse
import os
import shutil
import sys
import time
from typing import Any, Dict, List

from core.config import Config, dump_config, load_config
from core.errors import NASError
from core.registries import AGENTS
from core.run_logging import setup_logger


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
    return p.parse_args(argv)


def make_run_dir(output_dir: str, title: str) -> str:
    """Create a new, empty run directory; an existing one is never reused or overwritten."""
    if not title or os.sep in title or title in (".", ".."):
        raise NASError(f"--title {title!r}: must be a plain directory name")
    run_dir = os.path.join(output_dir, title)
    if os.path.exists(run_dir):
        raise NASError(f"run directory {run_dir} already exists; choose another --title")
    os.makedirs(run_dir)
    return run_dir


def run(config: Config, run_dir: str, progress: bool = True, resume: bool = False) -> Dict[str, Any]:
    """Write the resolved config, then build and run the configured agent in ``run_dir``."""
    dump_config(config, os.path.join(run_dir, "config.yaml"))
    logger = setup_logger(run_dir, verbose=progress)
    logger.info("%s run directory %s", "resuming" if resume else "run", run_dir)
    agent = AGENTS.get(config.agent.main_agent)(config, run_dir, progress=progress, resume=resume)
    try:
        return agent.run()
    finally:
        agent.close()


def main(argv: List[str] | None = None) -> int:
    """Parse, load, validate, build, dispatch; user mistakes exit 2 with one line on stderr."""
    args = parse_args(argv)
    run_dir = None
    created = False
    try:
        if args.resume:
            run_dir = args.resume
            if not os.path.isfile(os.path.join(run_dir, "config.yaml")):
                raise NASError(f"--resume {run_dir}: not a run directory (no config.yaml)")
            config = load_config(os.path.join(run_dir, "config.yaml"), args.overrides)
        else:
            if not args.config:
                raise NASError("-c CONFIG is required (or --resume RUN_DIR)")
            config = load_config(args.config, args.overrides)
            stem = os.path.splitext(os.path.basename(args.config))[0]
            title = args.title or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_dir = make_run_dir(args.output_dir or config.output_dir, title)
            created = True
        metrics = run(config, run_dir, progress=not args.quiet, resume=bool(args.resume))
    except NASError as err:
        if created and not os.path.isdir(os.path.join(run_dir, "checkpoints")):
            shutil.rmtree(run_dir)  # nothing was trained: leave no half-made run behind
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(metrics, run_dir))
    return 0


def summary(metrics: Dict[str, Any], run_dir: str) -> str:
    """The lines printed at the end of a run."""
    lines = [f"run directory: {run_dir}", f"architecture: {metrics.get('arch')}"]
    for key in ("flops", "params", "target_hc", "supernet_valid_accuracy", "test_accuracy"):
        value = metrics.get(key)
        if value is not None:
            lines.append(f"{key}: {value:.4f}" if key.endswith("accuracy") else f"{key}: {value:,.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
