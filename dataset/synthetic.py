"""Random but learnable images for tests and smoke runs: a fixed smooth template per class plus noise."""

from dataclasses import dataclass
from typing import Annotated, Tuple

import numpy as np

from core.errors import ConfigError
from core.registries import DATASETS
from core.typed import NonNegativeFloat, OpenFraction, PositiveInt, Range
from dataset.base import (
    STREAM_DATA,
    BaseDataset,
    DatasetParams,
    DatasetSplits,
    holdout_test,
    make_splits,
    resize_images,
)
from search_space.spec import DataInfo


@dataclass(frozen=True)
class SyntheticParams(DatasetParams):
    """Synthetic config section: classes, channels, size, sample count and noise level."""

    num_classes: Annotated[int, Range(ge=2)] = 4
    channels: PositiveInt = 1
    input_size: PositiveInt = 8
    samples: PositiveInt = 512
    test_portion: OpenFraction = 0.2
    #: std of the per-pixel noise; templates have unit std, so 1.0 is hard, 0.5 easy
    noise: NonNegativeFloat = 0.5
    pad: int = 1


def make_synthetic(
    num_classes: int, channels: int, size: int, samples: int, noise: float, seed: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Balanced images (N, size, size, C) float32 and labels (N,): class template (smooth blobs) + Gaussian noise."""
    rng = np.random.default_rng([seed, STREAM_DATA])
    coarse = max(2, size // 2)
    blobs = rng.normal(size=(num_classes, coarse, coarse, channels)).astype(np.float32)
    templates = resize_images(blobs, size)
    templates = (templates - templates.mean(axis=(1, 2, 3), keepdims=True)) / templates.std(
        axis=(1, 2, 3), keepdims=True
    )
    labels = rng.permutation(np.arange(samples) % num_classes).astype(np.int32)
    images = templates[labels] + noise * rng.normal(size=(samples, size, size, channels)).astype(np.float32)
    return images.astype(np.float32), labels


@DATASETS.register("synthetic")
class SyntheticDataset(BaseDataset):
    """Generated from ``split_seed`` alone, so every run and every test sees the same data."""

    Params = SyntheticParams

    def __init__(self, params: SyntheticParams | None = None):
        super().__init__(params)
        p = self.params
        if p.samples < 2 * p.num_classes:
            raise ConfigError(f"dataset.samples: must be >= 2 * num_classes ({2 * p.num_classes}), got {p.samples}")

    def load(self) -> DatasetSplits:
        """Generate the data and return the normalised, stratified splits."""
        p = self.params
        images, labels = make_synthetic(p.num_classes, p.channels, p.input_size, p.samples, p.noise, p.split_seed)
        trainval, test = holdout_test(images, labels, p.test_portion, p.split_seed)
        return make_splits(p, trainval, test, num_classes=p.num_classes, source="synthetic")

    def info(self) -> DataInfo:
        """The configured classes, channels and size."""
        p = self.params
        return DataInfo(num_classes=p.num_classes, in_channels=p.channels, input_size=p.input_size)
