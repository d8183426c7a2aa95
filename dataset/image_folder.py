"""Images in ``root/train/<class>/*`` (and optionally ``root/test/<class>/*``), one sub-folder per class."""

import os
from dataclasses import dataclass
from typing import List, Literal, Sequence, Tuple

import numpy as np
from nnabla.utils.image_utils import imread

from core.errors import DatasetError
from core.registries import DATASETS
from core.typed import OpenFraction, PositiveInt
from dataset.base import BaseDataset, DatasetParams, DatasetSplits, holdout_test, make_splits


@dataclass(frozen=True)
class ImageFolderParams(DatasetParams):
    """Image-folder config section: the root, colour or grey, and the test hold-out used without ``root/test``."""

    root: str = "data/images"
    channels: Literal[1, 3] = 3
    input_size: PositiveInt = 32
    test_portion: OpenFraction = 0.2
    flip: bool = True
    extensions: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")


def list_images(folder: str, extensions: Sequence[str]) -> List[str]:
    """Sorted image files (by extension, case-insensitive) directly inside ``folder``."""
    exts = tuple(e.lower() for e in extensions)
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(exts) and os.path.isfile(os.path.join(folder, f))
    )


def read_image(path: str, channels: int, size: int) -> np.ndarray:
    """One image as uint8 (size, size, channels) via nnabla's imread; DatasetError naming the file if unreadable."""
    try:
        img = imread(path, grayscale=channels == 1, num_channels=channels, size=(size, size))
    except (OSError, ValueError) as err:
        # nnabla's Pillow backend reports a file it cannot decode as "No backend available" (ValueError)
        raise DatasetError(f"cannot read image {path!r} ({type(err).__name__}: {err})") from None
    return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


@DATASETS.register("image_folder")
class ImageFolderDataset(BaseDataset):
    """Class folders of png/jpg images; labels are the class folder names in sorted order."""

    Params = ImageFolderParams

    def __init__(self, params: ImageFolderParams | None = None):
        super().__init__(params)
        self.class_names: Tuple[str, ...] = ()

    def _read_split(self, folder: str, classes: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        p = self.params
        index = {name: i for i, name in enumerate(classes)}
        images, labels = [], []
        for name in sorted(os.listdir(folder)):
            sub = os.path.join(folder, name)
            if not os.path.isdir(sub):
                continue
            if name not in index:
                raise DatasetError(
                    f"class folder {sub!r} has no counterpart in the train folder; valid classes: {', '.join(classes)}"
                )
            files = list_images(sub, p.extensions)
            if not files:
                raise DatasetError(f"class folder {sub!r} holds no images with extensions {', '.join(p.extensions)}")
            images.extend(read_image(f, p.channels, p.input_size) for f in files)
            labels.extend([index[name]] * len(files))
        if not images:
            raise DatasetError(f"image folder {folder!r} has no class folders; expected {folder}/<class>/*.png|jpg")
        return np.stack(images), np.asarray(labels, dtype=np.int32)

    def load(self) -> DatasetSplits:
        """Read every image (resized to ``input_size`` on read) and return the normalised splits."""
        p = self.params
        train_dir, test_dir = os.path.join(p.root, "train"), os.path.join(p.root, "test")
        if not os.path.isdir(p.root):
            raise DatasetError(
                f"image folder root {p.root!r} not found; expected {p.root}/train/<class>/*.png|jpg "
                "and optionally test/<class>/..."
            )
        if not os.path.isdir(train_dir):
            raise DatasetError(f"image folder {train_dir!r} not found; expected {p.root}/train/<class>/*.png|jpg")
        classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
        if not classes:
            raise DatasetError(f"image folder {train_dir!r} has no class folders; expected {train_dir}/<class>/*.png")
        if len(classes) < 2:
            raise DatasetError(
                f"image folder {train_dir!r} has one class folder ({classes[0]!r}); classification needs at least "
                f"two: {train_dir}/<class>/*.png, one sub-folder per class"
            )
        self.class_names = tuple(classes)
        trainval = self._read_split(train_dir, classes)
        if os.path.isdir(test_dir):
            test = self._read_split(test_dir, classes)
        else:
            trainval, test = holdout_test(*trainval, p.test_portion, p.split_seed)
        return make_splits(p, trainval, test, num_classes=len(classes), source=f"image folder {p.root!r}")
