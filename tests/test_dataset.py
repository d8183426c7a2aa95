"""Datasets: splits, normalisation, iterators, augmentation and the CIFAR / image-folder readers on tiny local files."""

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from core.errors import ConfigError, DatasetError, UnknownComponentError
from core.registries import DATASETS
from core.typed import from_dict
from dataset.base import (
    ArrayDataset,
    BaseDataset,
    DatasetParams,
    augment_batch,
    eval_batches,
    split_indices,
    steps_per_epoch,
    train_iterator,
)


def load(name: str, **params):
    cls = DATASETS.get(name)
    return cls(cls.Params(**params)).load()


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def raw_rows(splits, names=("train", "valid", "test")):
    """De-normalised images of the given splits, flattened and rounded (digits pixels are integers 0..16)."""
    mean, std = np.asarray(splits.mean), np.asarray(splits.std)
    rows = [getattr(splits, n).images * std[None, :, None, None] + mean[None, :, None, None] for n in names]
    return np.rint(np.concatenate(rows).reshape(sum(len(getattr(splits, n)) for n in names), -1)).astype(int)


def test_digits_splits_partition_the_data(digits):
    sizes = [len(digits.train), len(digits.valid), len(digits.test)]
    assert sum(sizes) == 1797
    assert sizes[2] == round(0.2 * 1797) and sizes[0] == round(0.8 * (1797 - sizes[2]))
    got = raw_rows(digits)
    want = load_digits().images.reshape(1797, -1).astype(int)
    # same multiset of images: no sample lost, none duplicated across (or within) splits
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))


def test_digits_shapes_dtypes_labels_and_stratification(digits):
    assert digits.info.num_classes == 10 and digits.info.in_channels == 1 and digits.info.input_size == 8
    for ds in (digits.train, digits.valid, digits.test):
        assert ds.images.shape == (len(ds), 1, 8, 8) and ds.images.dtype == np.float32
        assert ds.labels.shape == (len(ds), 1) and ds.labels.dtype == np.int32
        counts = np.bincount(ds.labels[:, 0], minlength=10)
        assert counts.min() >= 0.9 * counts.max() - 2  # stratified: every class in every split


def test_digits_normalised_with_train_statistics(digits):
    assert abs(float(digits.train.images.mean())) < 1e-5
    assert abs(float(digits.train.images.std()) - 1.0) < 1e-4
    train_raw = raw_rows(digits, ("train",))
    assert np.isclose(train_raw.mean(), digits.mean[0], atol=1e-3)
    assert not np.isclose(digits.valid.images.mean(), 0.0, atol=1e-6)  # valid is not normalised on itself


def test_digits_resize_and_fixed_normalisation():
    splits = load("digits", input_size=16, mean=(8.0,), std=(4.0,))
    assert splits.train.images.shape == (len(splits.train), 1, 16, 16)
    assert splits.info.input_size == 16 and splits.mean == (8.0,)
    assert splits.train.images.min() >= -2.0 - 1e-5 and splits.train.images.max() <= 2.0 + 1e-5


def test_splits_are_stable_for_a_seed_and_change_with_it(digits):
    again = load("digits")
    other = load("digits", split_seed=1)
    for name in ("train", "valid", "test"):
        assert np.array_equal(getattr(digits, name).images, getattr(again, name).images)
        assert np.array_equal(getattr(digits, name).labels, getattr(again, name).labels)
    assert not np.array_equal(digits.test.labels, other.test.labels)
    assert not np.array_equal(digits.valid.images, other.valid.images)


def test_split_indices_are_disjoint_complete_and_stratified():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    a, b = split_indices(labels, 0.3, seed=3, stream=1)
    assert len(a) == 45 and len(np.intersect1d(a, b)) == 0
    assert np.array_equal(np.sort(np.concatenate([a, b])), np.arange(150))
    assert np.array_equal(np.bincount(labels[a]), [3, 6, 9, 12, 15])
    with pytest.raises(DatasetError, match="empty"):
        split_indices(labels[:3], 0.1, seed=0, stream=0)


def toy(n: int = 12, c: int = 2, h: int = 6) -> ArrayDataset:
    images = np.arange(n * c * h * h, dtype=np.float32).reshape(n, c, h, h)
    return ArrayDataset(images, np.arange(n) % 3, pad=2, flip=True)


def test_train_iterator_shapes_epoch_and_reproducibility():
    ds = toy(12)
    it = train_iterator(ds, 4, np.random.default_rng(0), augment=False)
    batches = [it.next() for _ in range(6)]
    for x, y in batches:
        assert x.shape == (4, 2, 6, 6) and x.dtype == np.float32 and y.shape == (4, 1) and y.dtype == np.int32
        assert np.array_equal(ds.labels[(x[:, 0, 0, 0] / 72).astype(int)], y)  # images and labels stay paired
    ids = [(x[:, 0, 0, 0] / 72).astype(int) for x, _ in batches]
    first, second = np.concatenate(ids[:3]), np.concatenate(ids[3:])
    assert sorted(first) == list(range(12)) and sorted(second) == list(range(12))
    assert not np.array_equal(first, np.arange(12)) and not np.array_equal(first, second)
    assert it.epoch == 2 and steps_per_epoch(ds, 4) == 3 and steps_per_epoch(ds, 50) == 1
    again = train_iterator(ds, 4, np.random.default_rng(0), augment=False)
    assert all(np.array_equal(again.next()[0], x) for x, _ in batches)
    other = train_iterator(ds, 4, np.random.default_rng(1), augment=False)
    assert not all(np.array_equal(other.next()[0], x) for x, _ in batches)


def test_train_iterator_augments_reproducibly():
    ds = toy(8)
    a = train_iterator(ds, 8, np.random.default_rng(5), augment=True).next()
    b = train_iterator(ds, 8, np.random.default_rng(5), augment=True).next()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    plain = train_iterator(ds, 8, np.random.default_rng(5), augment=False).next()
    assert np.array_equal(plain[1], a[1])  # same shuffle, only the pixels are augmented
    assert not np.array_equal(plain[0], a[0])


def test_augmentation_is_a_padded_crop_or_its_mirror():
    ds = toy(16)
    x, y = ds.batch(np.arange(16), np.random.default_rng(7), augment=True)
    x2, _ = ds.batch(np.arange(16), np.random.default_rng(7), augment=True)
    assert np.array_equal(x, x2) and np.array_equal(y, ds.labels)
    assert not np.array_equal(x, ds.images)
    padded = np.pad(ds.images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(16):
        crops = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(np.array_equal(x[i], cr) or np.array_equal(x[i], cr[..., ::-1]) for cr in crops)
    assert np.array_equal(ds.images, toy(16).images)  # the split itself is never modified
    flipped = augment_batch(ds.images.copy(), np.random.default_rng(0), pad=0, flip=True)
    mirrored = [np.array_equal(f, im[..., ::-1]) for f, im in zip(flipped, ds.images)]
    kept = [np.array_equal(f, im) for f, im in zip(flipped, ds.images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    with pytest.raises(ValueError, match="rng"):
        ds.batch([0], None, augment=True)


def test_eval_batches_cover_every_sample_once():
    ds = toy(11)
    batches = list(eval_batches(ds, 4))
    assert [len(y) for _, y in batches] == [4, 4, 3]
    assert np.array_equal(np.concatenate([x for x, _ in batches]), ds.images)
    assert np.array_equal(np.concatenate([y for _, y in batches]), ds.labels)
    assert len(list(eval_batches(ds, 4, max_batches=2))) == 2


# --- CIFAR: tiny pickle folders in the real format -------------------------------------------------------------


def cifar_rows(n: int, start: int, num_classes: int, rng: np.random.Generator):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    ids = np.arange(start, start + n)
    data[:, 0] = ids  # red channel, pixel (0, 0) identifies the image
    return data, [int(i % num_classes) for i in ids]


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture()
def cifar10_dir(tmp_path):
    root, rng, rows = tmp_path / "cifar-10-batches-py", np.random.default_rng(0), {}
    root.mkdir()
    for i in range(1, 6):
        data, labels = cifar_rows(6, 6 * (i - 1), 10, rng)
        write_pickle(root / f"data_batch_{i}", {b"batch_label": b"x", b"data": data, b"labels": labels})
        rows.update({int(r[0]): r for r in data})
    test, test_labels = cifar_rows(5, 100, 10, rng)
    write_pickle(root / "test_batch", {b"data": test, b"labels": test_labels})
    write_pickle(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return root, rows, test, test_labels


def chw(row: np.ndarray) -> np.ndarray:
    return row.reshape(3, 32, 32).astype(np.float32)


def test_cifar10_reads_pixels_and_labels_in_chw_layout(cifar10_dir):
    root, rows, test, test_labels = cifar10_dir
    splits = load("cifar10", root=str(root), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert splits.info.num_classes == 10 and splits.info.in_channels == 3 and splits.info.input_size == 32
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (24, 6, 5)
    assert np.array_equal(splits.test.images, np.stack([chw(r) for r in test]))
    assert splits.test.labels[:, 0].tolist() == test_labels
    seen = []
    for ds in (splits.train, splits.valid):
        for img, label in zip(ds.images, ds.labels[:, 0]):
            ident = int(img[0, 0, 0])
            assert np.array_equal(img, chw(rows[ident])) and label == ident % 10
            seen.append(ident)
    assert sorted(seen) == list(range(30))
    assert splits.test.images[0, 1, 2, 3] == test[0, 1024 + 2 * 32 + 3]  # channel 1, row 2, column 3


def test_cifar10_normalises_and_subsamples(cifar10_dir):
    root = str(cifar10_dir[0])
    splits = load("cifar10", root=root, max_train=20, max_test=3)
    assert (len(splits.train) + len(splits.valid), len(splits.test)) == (20, 3)
    assert np.allclose(splits.train.images.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    assert np.allclose(splits.train.images.std(axis=(0, 2, 3)), 1.0, atol=1e-3)


def test_cifar100_reads_fine_labels(tmp_path):
    root, rng = tmp_path / "cifar-100-python", np.random.default_rng(1)
    root.mkdir()
    data, labels = cifar_rows(20, 0, 100, rng)
    labels = [int(v) for v in rng.integers(0, 100, size=20)]
    write_pickle(root / "train", {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * 20})
    test, _ = cifar_rows(4, 50, 100, rng)
    write_pickle(root / "test", {b"data": test, b"fine_labels": [99, 0, 42, 7], b"coarse_labels": [0] * 4})
    write_pickle(root / "meta", {b"fine_label_names": [b"n"] * 100, b"coarse_label_names": [b"c"] * 20})
    splits = load("cifar100", root=str(root), mean=(0.0,) * 3, std=(1.0,) * 3)
    assert splits.info.num_classes == 100 and splits.test.labels[:, 0].tolist() == [99, 0, 42, 7]
    by_id = dict(zip(data[:, 0].tolist(), labels))
    for ds in (splits.train, splits.valid):
        assert [by_id[int(i)] for i in ds.images[:, 0, 0, 0]] == ds.labels[:, 0].tolist()


def test_cifar_missing_or_malformed_files_raise_dataset_error(tmp_path, cifar10_dir):
    missing = tmp_path / "nowhere" / "cifar-10-batches-py"
    with pytest.raises(DatasetError, match="nowhere.*data_batch_1.*by hand"):
        load("cifar10", root=str(missing))
    with pytest.raises(DatasetError, match="cifar-100-python"):
        load("cifar100", root=str(tmp_path / "cifar-100-python"))
    root = cifar10_dir[0]
    os.remove(root / "test_batch")
    with pytest.raises(DatasetError, match="test_batch"):
        load("cifar10", root=str(root))
    (root / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="test_batch.*not a CIFAR python pickle"):
        load("cifar10", root=str(root))
    write_pickle(root / "test_batch", {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match="malformed"):
        load("cifar10", root=str(root))


# --- image folders ------------------------------------------------------------------------------------------------

COLOURS = {"ant": (250, 10, 10), "cat": (10, 250, 10), "dog": (10, 10, 250)}


def write_tree(root, split: str, per_class: int):
    for name, colour in COLOURS.items():
        os.makedirs(root / split / name, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), colour).save(root / split / name / f"{i}.png")


def test_image_folder_maps_sorted_class_folders_to_labels(tmp_path):
    write_tree(tmp_path, "train", 5)
    write_tree(tmp_path, "test", 2)
    splits = load("image_folder", root=str(tmp_path), input_size=8, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert splits.info.num_classes == 3 and splits.info.in_channels == 3
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (12, 3, 6)
    for ds in (splits.train, splits.valid, splits.test):
        assert ds.images.shape[1:] == (3, 8, 8)
        for img, label in zip(ds.images, ds.labels[:, 0]):
            assert tuple(img[:, 4, 4]) == COLOURS[sorted(COLOURS)[label]]


def test_image_folder_grey_holdout_and_errors(tmp_path):
    write_tree(tmp_path, "train", 5)
    splits = load("image_folder", root=str(tmp_path), channels=1, input_size=4, test_portion=0.2)
    assert splits.info.in_channels == 1 and splits.train.images.shape[1:] == (1, 4, 4)
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 15 and len(splits.test) == 3
    with pytest.raises(DatasetError, match="nowhere"):
        load("image_folder", root=str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class folders"):
        load("image_folder", root=str(tmp_path / "empty"))
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        load("image_folder", root=str(tmp_path))


def test_info_without_reading_equals_the_loaded_data(tmp_path, cifar10_dir):
    """A dataset's ``info()`` (what a lookup table is built for) is what its loaded splits hold; CIFAR's needs no
    file, the others derive it from what they read."""
    write_tree(tmp_path / "folder", "train", 3)
    cases = [
        ("digits", {"input_size": 12}),
        ("synthetic", {"num_classes": 3, "channels": 2, "input_size": 6, "samples": 30}),
        ("cifar10", {"root": str(cifar10_dir[0]), "input_size": 16}),
        ("image_folder", {"root": str(tmp_path / "folder"), "channels": 1, "input_size": 4}),
    ]
    for name, params in cases:
        cls = DATASETS.get(name)
        ds = cls(cls.Params(**params))
        assert ds.info() == ds.load().info, name
    absent = DATASETS.get("cifar100")
    info = absent(absent.Params(root=str(tmp_path / "nowhere"), input_size=24)).info()
    assert (info.num_classes, info.in_channels, info.input_size) == (100, 3, 24)


# --- registry contract ------------------------------------------------------------------------------------------


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(UnknownComponentError, match="did you mean digits"):
        DATASETS.get("digit")


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_declares_typed_frozen_params(name):
    cls = DATASETS.get(name)
    assert issubclass(cls, BaseDataset) and dataclasses.is_dataclass(cls.Params)
    assert issubclass(cls.Params, DatasetParams)
    params = from_dict(cls.Params, {"input_size": 8, "split_seed": 3}, "dataset")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.input_size = 4
    for field in ("input_size", "train_portion", "augment", "split_seed"):
        assert hasattr(params, field)
    with pytest.raises(ConfigError, match="train_portion"):
        cls(dataclasses.replace(params, train_portion=1.0))


def test_synthetic_is_deterministic_and_learnable():
    splits = load("synthetic", num_classes=5, channels=3, samples=400)
    again = load("synthetic", num_classes=5, channels=3, samples=400)
    assert np.array_equal(splits.train.images, again.train.images)
    assert splits.info.num_classes == 5 and splits.train.images.shape[1:] == (3, 8, 8)
    flat = splits.train.images.reshape(len(splits.train), -1)
    centroids = np.stack([flat[splits.train.labels[:, 0] == k].mean(0) for k in range(5)])
    test = splits.test.images.reshape(len(splits.test), -1)
    predicted = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == splits.test.labels[:, 0]).mean() > 0.9


def test_train_iterator_state_round_trip_continues_the_same_batches():
    ds = toy(10)
    it = train_iterator(ds, 4, np.random.default_rng(3), augment=True)
    seen = [it.next()[1][:, 0] for _ in range(5)]  # 20 draws over 10 samples: two whole epochs, no repeats inside
    draws = np.concatenate(seen)
    assert sorted(draws[:10]) == sorted(ds.labels[:, 0]) and sorted(draws[10:]) == sorted(ds.labels[:, 0])
    state = it.state_dict()
    expected = [it.next() for _ in range(7)]
    resumed = train_iterator(ds, 4, np.random.default_rng(99), augment=True)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # the state survives JSON
    for (x, y), (x2, y2) in zip(expected, (resumed.next() for _ in range(7))):
        assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert resumed.epoch == it.epoch
