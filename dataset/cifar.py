"""CIFAR-10 / CIFAR-100 read from their standard local python-pickle folders (never downloaded at run time)."""

import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from core.errors import DatasetError
from core.registries import DATASETS
from core.typed import PositiveInt
from dataset.base import (
    STREAM_MAX_TEST,
    STREAM_MAX_TRAIN,
    BaseDataset,
    DatasetParams,
    DatasetSplits,
    make_splits,
    subsample,
)
from search_space.spec import DataInfo

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarParams(DatasetParams):
    """CIFAR config section: the extracted python-version folder, optional subsampling (handy on CPU)."""

    root: str = "data/cifar-10-batches-py"
    input_size: int = 32
    augment: bool = True
    pad: int = 4
    flip: bool = True
    max_train: PositiveInt | None = None
    max_test: PositiveInt | None = None


@dataclass(frozen=True)
class Cifar100Params(CifarParams):
    """CIFAR-100 config section (fine labels)."""

    root: str = "data/cifar-100-python"


def read_pickle(path: str) -> Dict[Any, Any]:
    """Unpickle one CIFAR file (python-2 pickles, so byte-string keys); DatasetError if it is not one."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")
    except OSError as err:
        raise DatasetError(f"{path}: cannot read CIFAR file ({err.strerror or err})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
        raise DatasetError(f"{path}: not a CIFAR python pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a CIFAR python pickle (expected a dict, got {type(data).__name__})")
    return data


def _field(data: Dict[Any, Any], key: str, path: str) -> Any:
    for k in (key.encode(), key):
        if k in data:
            return data[k]
    raise DatasetError(f"{path}: malformed CIFAR pickle, missing key {key!r} (found {sorted(map(str, data))})")


def read_batch(path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) of one CIFAR batch file."""
    data = read_pickle(path)
    try:
        images = np.asarray(_field(data, "data", path), dtype=np.uint8)
        labels = np.asarray(_field(data, label_key, path), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: malformed CIFAR pickle ({err})") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise DatasetError(
            f"{path}: malformed CIFAR pickle, data is {images.shape} for {len(labels)} labels; "
            "expected (N, 3072) uint8 rows (R, G, B planes of 32x32) and N labels"
        )
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class CifarDataset(BaseDataset):
    """Shared CIFAR reader: subclasses name their files, label key and class count."""

    Params = CifarParams
    title = "CIFAR-10"
    num_classes = 10
    train_files: Sequence[str] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"

    def __init__(self, params: CifarParams | None = None):
        super().__init__(params)
        self.class_names: Tuple[str, ...] = ()

    def _path(self, name: str) -> str:
        root = self.params.root
        expected = ", ".join([*self.train_files, self.test_file, self.meta_file])
        if not os.path.isdir(root):
            raise DatasetError(
                f"{self.title} folder {root!r} not found (expected {expected}); download the python "
                f"version from {CIFAR_URL} and extract it by hand, nothing is downloaded at run time"
            )
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise DatasetError(
                f"{self.title} file {path!r} is missing (expected {expected} in {root!r}); "
                f"re-extract the python version from {CIFAR_URL} by hand"
            )
        return path

    def info(self) -> DataInfo:
        """Colour images at ``input_size`` with the dataset's class count (no file is read)."""
        return DataInfo(num_classes=self.num_classes, in_channels=3, input_size=self.params.input_size)

    def load(self) -> DatasetSplits:
        """The train/valid/test splits (train/valid from the training batches, test from the test batch)."""
        p = self.params
        paths = [self._path(name) for name in (*self.train_files, self.test_file, self.meta_file)]
        names = _field(read_pickle(paths[-1]), self.names_key, paths[-1])
        self.class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        if len(self.class_names) != self.num_classes:
            raise DatasetError(f"{paths[-1]}: {len(self.class_names)} {self.names_key}, expected {self.num_classes}")
        batches = [read_batch(path, self.label_key) for path in paths[:-2]]
        x_tv = np.concatenate([b[0] for b in batches])
        y_tv = np.concatenate([b[1] for b in batches])
        x_te, y_te = read_batch(paths[-2], self.label_key)
        keep_tv = subsample(y_tv, p.max_train, p.split_seed, STREAM_MAX_TRAIN)
        keep_te = subsample(y_te, p.max_test, p.split_seed, STREAM_MAX_TEST)
        return make_splits(
            p,
            (x_tv[keep_tv], y_tv[keep_tv]),
            (x_te[keep_te], y_te[keep_te]),
            num_classes=self.num_classes,
            source=self.title,
        )


@DATASETS.register("cifar10")
class Cifar10Dataset(CifarDataset):
    """CIFAR-10 from ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta)."""


@DATASETS.register("cifar100")
class Cifar100Dataset(CifarDataset):
    """CIFAR-100 from ``cifar-100-python/`` (train, test, meta), fine labels."""

    Params = Cifar100Params
    title = "CIFAR-100"
    num_classes = 100
    train_files = ("train",)
    test_file = "test"
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
