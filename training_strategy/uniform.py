"""Single-path one-shot with uniform sampling (SPOS): one random path per step, only it is computed."""

import numpy as np

from core.registries import TRAINING_STRATEGIES
from search_space.base_supernet import BaseSupernet
from training_strategy.base import BaseTrainingStrategy


@TRAINING_STRATEGIES.register("uniform")
class UniformSampling(BaseTrainingStrategy):
    """Each step draws every label independently and uniformly from the run's generator."""

    def before_step(self, supernet: BaseSupernet, epoch: int, step: int, rng: np.random.Generator) -> None:
        supernet.set_active(supernet.choices().sample(rng))
