"""One seeded numpy Generator per run, handed to every component that draws random numbers."""

import nnabla as nn
import numpy as np


def make_rng(seed: int) -> np.random.Generator:
    """The run's generator; children are split from it with ``spawn_rng``."""
    return np.random.default_rng(seed)


def spawn_rng(rng: np.random.Generator) -> np.random.Generator:
    """An independent child generator (for one component), reproducible from the parent."""
    return np.random.default_rng(rng.integers(0, 2**63 - 1))


def seed_nnabla(rng: np.random.Generator) -> None:
    """Seed nnabla's own RNG (parameter initialisers, dropout) from the run's generator."""
    nn.random.seed(int(rng.integers(0, 2**31 - 1)))
    nn.random.prng = np.random.RandomState(int(rng.integers(0, 2**31 - 1)))
