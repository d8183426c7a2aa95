"""Run logging: a `log.txt` file logger, console echo, and TensorBoard scalars via tensorboardX."""

import logging
import os
import sys
from typing import Mapping

from nnabla.logger import logger as nnabla_logger
from tensorboardX import SummaryWriter

LOGGER_NAME = "nas"


def setup_logger(run_dir: str | None, verbose: bool = True) -> logging.Logger:
    """Configure the toolkit logger to write to ``run_dir/log.txt`` and (optionally) stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    nnabla_logger.setLevel(logging.WARNING)  # nnabla's per-iterator INFO lines drown the run's own log
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if run_dir is not None:
        fh = logging.FileHandler(os.path.join(run_dir, "log.txt"), encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    if verbose:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(sh)
    return logger


def get_logger() -> logging.Logger:
    """The toolkit logger (silent until ``setup_logger`` adds handlers)."""
    return logging.getLogger(LOGGER_NAME)


class Monitor:
    """Scalars to TensorBoard (``run_dir/tb``) and to the log; a no-op sink when run_dir is None."""

    def __init__(self, run_dir: str | None):
        self.writer = SummaryWriter(os.path.join(run_dir, "tb")) if run_dir else None

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Write each value as ``prefix/name`` at ``step``."""
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", float(v), step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
