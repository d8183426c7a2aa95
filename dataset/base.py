"""The dataset contract (in-memory splits, batches, nnabla iterators) and the preprocessing every dataset shares."""

import abc
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Sequence, Tuple

import numpy as np
from nnabla.utils.image_utils import imresize

from core.errors import ConfigError, DatasetError
from core.typed import NonNegativeInt, OpenFraction, PositiveInt, check_ranges
from search_space.spec import DataInfo

Batch = Tuple[np.ndarray, np.ndarray]

#: independent split streams of one ``split_seed`` (so changing one split never reshuffles another)
STREAM_TEST, STREAM_VALID, STREAM_MAX_TRAIN, STREAM_MAX_TEST, STREAM_DATA = range(5)


@dataclass(frozen=True)
class DatasetParams:
    """Fields every dataset's ``Params`` has; subclasses add their own and may change the defaults."""

    input_size: PositiveInt = 32
    #: share of the non-test data that trains weights; the rest is the ``valid`` split architectures are scored on
    train_portion: OpenFraction = 0.8
    augment: bool = False
    #: augmentation recipe: random crop after ``pad`` pixels of zero padding, plus optional horizontal flip
    pad: NonNegativeInt = 4
    flip: bool = False
    #: seeds every split (not the run's rng), so splits are the same across runs
    split_seed: NonNegativeInt = 0
    #: per-channel normalisation; computed on the train split when not given
    mean: Tuple[float, ...] | None = None
    std: Tuple[float, ...] | None = None


def augment_batch(x: np.ndarray, rng: np.random.Generator, pad: int, flip: bool) -> np.ndarray:
    """Random crop of the zero-padded batch (B, C, H, W) and optional horizontal flip, drawn from ``rng``."""
    b, _, h, w = x.shape
    if pad > 0:
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        oy = rng.integers(0, 2 * pad + 1, size=b)
        ox = rng.integers(0, 2 * pad + 1, size=b)
        x = np.ascontiguousarray(windows[np.arange(b), :, oy, ox])
    if flip:
        mask = rng.random(b) < 0.5
        x[mask] = x[mask][..., ::-1]
    return x


class ArrayDataset:
    """One in-memory split: normalised float32 images (N, C, H, W) and int32 labels (N, 1)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, pad: int = 0, flip: bool = False):
        images = np.ascontiguousarray(images, dtype=np.float32)
        labels = np.asarray(labels).astype(np.int32, copy=False).reshape(-1, 1)
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, C, H, W) with N = len(labels); got {images.shape}, {len(labels)}")
        self.images, self.labels, self.pad, self.flip = images, labels, pad, flip

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int) -> Batch:
        """Image (C, H, W) and label (1,) of one sample (views, no augmentation)."""
        return self.images[index], self.labels[index]

    @classmethod
    def concat(cls, first: "ArrayDataset", second: "ArrayDataset") -> "ArrayDataset":
        """One split holding both (e.g. train + valid for retraining); augmentation settings from ``first``."""
        return cls(
            np.concatenate([first.images, second.images]),
            np.concatenate([first.labels, second.labels]),
            pad=first.pad,
            flip=first.flip,
        )

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None, augment: bool = False) -> Batch:
        """Copies of the samples at ``indices``: x float32 (B, C, H, W), y int32 (B, 1), augmented from ``rng``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        x, y = self.images[idx], self.labels[idx]
        if augment:
            if rng is None:
                raise ValueError("augment=True needs an rng to draw the crops/flips from")
            x = augment_batch(x, rng, self.pad, self.flip)
        return x, y


@dataclass(frozen=True)
class DatasetSplits:
    """The three splits of a dataset and what a search space needs to know about it."""

    train: ArrayDataset
    valid: ArrayDataset
    test: ArrayDataset
    info: DataInfo
    #: per-channel normalisation applied to every split (what inference on raw images must apply too)
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()


class BaseDataset(abc.ABC):
    """A dataset component: typed ``Params`` in, ``load()`` gives the train/valid/test splits."""

    Params: type = DatasetParams

    def __init__(self, params: Any | None = None):
        params = self.Params() if params is None else params
        if not isinstance(params, self.Params):
            raise ConfigError(f"dataset params must be a {self.Params.__name__}, got {type(params).__name__}")
        check_common_params(params)
        self.params = params

    @abc.abstractmethod
    def load(self) -> DatasetSplits:
        """Read (or generate) the data and return the normalised splits."""

    def info(self) -> DataInfo:
        """What a network built for this data sees (classes, channels, input size), as ``load().info`` gives it.

        Datasets that know it from their params alone override this, so a lookup table can be built and checked
        without reading the data.
        """
        return self.load().info


def check_common_params(params: DatasetParams) -> None:
    """ConfigError naming the first invalid field (ranges of the Params annotations, then mean/std)."""
    check_ranges(params, "dataset")
    if (params.mean is None) != (params.std is None):
        raise ConfigError("dataset.mean / dataset.std: give both or neither")
    if params.std is not None and min(params.std, default=0.0) <= 0:
        raise ConfigError(f"dataset.std: every value must be > 0, got {list(params.std)}")


def split_indices(
    labels: np.ndarray, portion: float, seed: int, stream: int, stratify: bool = True, what: str = "split"
) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted indices of a ``portion`` share and of the rest, drawn from ``(seed, stream)``, per-class if stratified."""
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    k = int(round(portion * n))
    if not 0 < k < n:
        raise DatasetError(f"{what}: a share of {portion} of {n} samples leaves one side empty; use more data")
    rng = np.random.default_rng([seed, stream])
    perm = rng.permutation(n)
    if stratify:
        # rank of each sample inside its (shuffled) class, spread over [0, 1): the k smallest keys take
        # the same share of every class, and the total is exactly k
        order = np.argsort(labels[perm], kind="stable")
        perm = perm[order]
        _, start, inverse, counts = np.unique(labels[perm], return_index=True, return_inverse=True, return_counts=True)
        rank = np.arange(n) - start[inverse]
        key = (rank + rng.random(n)) / counts[inverse]
        perm = perm[np.argsort(key, kind="stable")]
    return np.sort(perm[:k]), np.sort(perm[k:])


def subsample(labels: np.ndarray, limit: int | None, seed: int, stream: int) -> np.ndarray:
    """Indices of a stratified subset of at most ``limit`` samples (all of them when ``limit`` is None or larger)."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    return split_indices(labels, limit / n, seed, stream, what=f"subsample to {limit}")[0]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) images to (N, size, size, C) with nnabla's imresize (no-op if already there)."""
    if images.shape[1:3] == (size, size):
        return images
    if images.dtype not in (np.uint8, np.float32):
        images = images.astype(np.float32)
    return np.stack([imresize(img, (size, size)) for img in images]).reshape(len(images), size, size, -1)


def to_chw(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def to_hwc(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C)."""
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def channel_stats(images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of (N, C, H, W) images (a constant channel gets std 1)."""
    mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = images.std(axis=(0, 2, 3), dtype=np.float64)
    return mean, np.where(std > 1e-8, std, 1.0)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 ``(images - mean) / std`` per channel of (N, C, H, W) images."""
    shape = (1, -1, 1, 1)
    out = images.astype(np.float32, copy=True)
    out -= np.asarray(mean, np.float32).reshape(shape)
    out /= np.asarray(std, np.float32).reshape(shape)
    return out


def holdout_test(
    images: np.ndarray, labels: np.ndarray, test_portion: float, seed: int
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Stratified ``(trainval, test)`` split for datasets that ship without a test set."""
    test_idx, trainval_idx = split_indices(labels, test_portion, seed, STREAM_TEST, what="dataset.test_portion")
    return (images[trainval_idx], labels[trainval_idx]), (images[test_idx], labels[test_idx])


def make_splits(
    params: DatasetParams,
    trainval: Tuple[np.ndarray, np.ndarray],
    test: Tuple[np.ndarray, np.ndarray],
    num_classes: int,
    source: str,
) -> DatasetSplits:
    """Split train/valid, resize, normalise with train-split statistics; images come as raw (N, H, W, C)."""
    x_tv, y_tv = trainval[0], np.asarray(trainval[1]).reshape(-1)
    x_te, y_te = test[0], np.asarray(test[1]).reshape(-1)
    for y in (y_tv, y_te):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DatasetError(f"{source}: labels must lie in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    train_idx, valid_idx = split_indices(
        y_tv, params.train_portion, params.split_seed, STREAM_VALID, what="dataset.train_portion"
    )
    size = params.input_size
    x_tv, x_te = to_chw(resize_images(x_tv, size)), to_chw(resize_images(x_te, size))
    parts = {"train": (x_tv[train_idx], y_tv[train_idx]), "valid": (x_tv[valid_idx], y_tv[valid_idx])}
    channels = x_tv.shape[1]
    del x_tv  # normalise the raw (often uint8) splits one by one: peak memory stays near one float copy
    if params.mean is not None:
        if len(params.mean) != channels or len(params.std) != channels:
            raise ConfigError(f"dataset.mean / dataset.std: need {channels} values (one per channel) for {source}")
        mean, std = np.asarray(params.mean), np.asarray(params.std)
    else:
        mean, std = channel_stats(parts["train"][0])
    parts["test"] = (x_te, y_te)
    out = {
        name: ArrayDataset(normalize(x, mean, std), y, pad=params.pad, flip=params.flip)
        for name, (x, y) in parts.items()
    }
    info = DataInfo(num_classes=num_classes, in_channels=channels, input_size=size)
    return DatasetSplits(
        train=out["train"],
        valid=out["valid"],
        test=out["test"],
        info=info,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(v) for v in std),
    )


class BatchIterator:
    """Endless shuffled training batches: every sample once per epoch, a fresh order from ``rng`` each epoch.

    A batch that runs past the end of an epoch's order continues with the next order, so no sample repeats
    inside an epoch. Its whole state (order, position, random streams) round-trips through ``state_dict``,
    so a resumed run draws exactly the batches an uninterrupted one would.
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, rng: np.random.Generator, augment: bool):
        if len(ds) == 0:
            raise DatasetError("cannot iterate an empty split; give the dataset more samples")
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be > 0, got {batch_size}")
        self._ds, self.batch_size, self._augment = ds, batch_size, augment
        self._order_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
        self._aug_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
        self.epoch = 0
        self._new_order()

    def _new_order(self) -> None:
        self._order_state = self._order_rng.bit_generator.state  # regenerates this order on load
        self._order = self._order_rng.permutation(len(self._ds))
        self._pos = 0

    def next(self) -> Batch:
        """The next batch ``(x float32 (B, C, H, W), y int32 (B, 1))``, augmented if asked."""
        parts = []
        need = self.batch_size
        while need:
            take = self._order[self._pos : self._pos + need]
            parts.append(take)
            self._pos += len(take)
            need -= len(take)
            if self._pos == len(self._order):
                self.epoch += 1
                self._new_order()
        return self._ds.batch(np.concatenate(parts), self._aug_rng, self._augment)

    def state_dict(self) -> Dict[str, Any]:
        """JSON-ready state: the epoch, the current order's generator state, the position, the augmentation rng."""
        return {
            "epoch": self.epoch,
            "order_rng": self._order_state,
            "position": int(self._pos),
            "aug_rng": self._aug_rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict`` output (the order is regenerated, not stored)."""
        self._order_rng.bit_generator.state = state["order_rng"]
        self._new_order()
        if not 0 <= state["position"] < len(self._order):
            raise ValueError(f"iterator position {state['position']} outside 0..{len(self._order) - 1}")
        self._pos = int(state["position"])
        self.epoch = int(state["epoch"])
        self._aug_rng.bit_generator.state = state["aug_rng"]


def train_iterator(ds: ArrayDataset, batch_size: int, rng: np.random.Generator, augment: bool) -> BatchIterator:
    """Endless shuffled training batches of ``ds``; shuffling and augmentation are reproducible from ``rng``."""
    return BatchIterator(ds, batch_size, rng, augment)


def steps_per_epoch(ds: ArrayDataset, batch_size: int) -> int:
    """Number of full batches in one pass over ``ds`` (at least 1)."""
    return max(1, len(ds) // batch_size)


def eval_batches(ds: ArrayDataset, batch_size: int, max_batches: int | None = None) -> Iterator[Batch]:
    """The split in order, every sample exactly once (the last batch may be smaller); at most ``max_batches``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be > 0, got {batch_size}")
    for i, start in enumerate(range(0, len(ds), batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield ds.batch(np.arange(start, min(start + batch_size, len(ds))))
