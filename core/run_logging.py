"""Run logging: a `log.txt` file logger, console echo, and TensorBoard scalars via tensorboardX."""

import logging
import logging.handlers
import os
import sys
from typing import Mapping

from nnabla.logger import logger as nnabla_logger
from tensorboardX import SummaryWriter

LOGGER_NAME = "nas"


def setup_logger(verbose: bool = True) -> logging.Logger:
    """Configure the toolkit logger: console echo (optional) and a buffer kept until ``attach_log_file``.

    A run logs while it is built and validated, before its run directory may be written; the buffer
    keeps those lines for ``log.txt`` without touching the directory of a run that fails validation.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    nnabla_logger.setLevel(logging.WARNING)  # nnabla's per-iterator INFO lines drown the run's own log
    logger.addHandler(logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1))
    if verbose:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(sh)
    return logger


def attach_log_file(run_dir: str) -> None:
    """Start appending the toolkit log to ``run_dir/log.txt``, beginning with the lines buffered so far."""
    logger = logging.getLogger(LOGGER_NAME)
    fh = logging.FileHandler(os.path.join(run_dir, "log.txt"), encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for h in list(logger.handlers):
        if isinstance(h, logging.handlers.MemoryHandler):
            h.setTarget(fh)
            h.flush()
            logger.removeHandler(h)
            h.close()
    logger.addHandler(fh)


def get_logger() -> logging.Logger:
    """The toolkit logger (silent until ``setup_logger`` adds handlers)."""
    return logging.getLogger(LOGGER_NAME)


class Monitor:
    """Scalars to TensorBoard (``run_dir/tb``); a no-op sink when run_dir is None. Opens on the first scalar."""

    def __init__(self, run_dir: str | None):
        self.run_dir = run_dir
        self.writer: SummaryWriter | None = None

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Write each value as ``prefix/name`` at ``step``."""
        if self.run_dir is None:
            return
        if self.writer is None:
            self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"))
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", float(v), step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
