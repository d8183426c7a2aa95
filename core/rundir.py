"""Run directories: a new one per run, never an existing one reused or overwritten."""

import os
import time

from core.errors import NASError


def default_title(config_path: str, prefix: str = "") -> str:
    """``<prefix><config name>-<date>-<time>``: the default name of a run of ``config_path``."""
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return f"{prefix}{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(output_dir: str, title: str) -> str:
    """The path of a new run directory; an existing one is never reused or overwritten."""
    if not title or os.sep in title or title in (".", ".."):
        raise NASError(f"--title {title!r}: must be a plain directory name")
    run_dir = os.path.join(output_dir, title)
    if os.path.exists(run_dir):
        raise NASError(f"run directory {run_dir} already exists; choose another --title")
    return run_dir
