"""scikit-learn's bundled handwritten digits (1,797 8x8 grey images, 10 classes): the default, download-free data."""

from dataclasses import dataclass

import numpy as np

from core.registries import DATASETS
from core.typed import OpenFraction, PositiveInt
from dataset.base import BaseDataset, DatasetParams, DatasetSplits, holdout_test, make_splits
from search_space.spec import DataInfo


@dataclass(frozen=True)
class DigitsParams(DatasetParams):
    """Digits config section: a stratified test hold-out, then train/valid; no flips (they change digits)."""

    input_size: PositiveInt = 8
    test_portion: OpenFraction = 0.2
    augment: bool = False
    pad: int = 1
    flip: bool = False


@DATASETS.register("digits")
class DigitsDataset(BaseDataset):
    """``sklearn.datasets.load_digits`` (pixel values 0..16) split into train / valid / test."""

    Params = DigitsParams

    def load(self) -> DatasetSplits:
        """The stratified, normalised splits at ``input_size``."""
        from sklearn.datasets import load_digits  # scikit-learn takes a second to import: only when data is read

        raw = load_digits()
        images = np.asarray(raw.images, dtype=np.float32)[..., np.newaxis]
        labels = np.asarray(raw.target, dtype=np.int32)
        trainval, test = holdout_test(images, labels, self.params.test_portion, self.params.split_seed)
        return make_splits(self.params, trainval, test, num_classes=10, source="digits")

    def info(self) -> DataInfo:
        """Ten classes of grey images at ``input_size``."""
        return DataInfo(num_classes=10, in_channels=1, input_size=self.params.input_size)
