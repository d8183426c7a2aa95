"""Checkpoints of a whole training stage: weights (nnabla's .h5), every other array (.h5) and a JSON commit record.

One checkpoint = ``<tag>_params.<epoch>.h5`` (``nn.save_parameters`` format, loadable by nnabla itself),
``<tag>_arrays.<epoch>.h5`` (solver states and any array in a strategy's state) and ``<tag>_state.json``,
written last and atomically: it names the files of the current checkpoint with their SHA-256, so a crash
mid-save leaves the previous checkpoint intact and a damaged file is detected before anything is loaded.
"""

import hashlib
import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

import h5py
import nnabla as nn
import numpy as np

from core.checkpoint import atomic_path, write_json
from core.errors import CheckpointError

FORMAT = 1
_ARRAY = "__array__"
_TMP = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def _split_arrays(obj: Any, arrays: List[np.ndarray]) -> Any:
    """Replace every ndarray leaf by a reference into ``arrays`` (JSON keeps the structure)."""
    if isinstance(obj, np.ndarray):
        arrays.append(obj)
        return {_ARRAY: len(arrays) - 1}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {str(k): _split_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, arrays) for v in obj]
    return obj


def _join_arrays(obj: Any, arrays: Mapping[int, np.ndarray]) -> Any:
    if isinstance(obj, Mapping):
        if set(obj) == {_ARRAY}:
            return arrays[obj[_ARRAY]]
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    directory: str, tag: str, epoch: int, params: Mapping[str, nn.Variable], state: Mapping[str, Any]
) -> None:
    """Write one checkpoint of ``tag`` and remove the files of the previous one."""
    os.makedirs(directory, exist_ok=True)
    record_path = os.path.join(directory, f"{tag}_state.json")
    files = {"params": f"{tag}_params.{epoch}.h5", "arrays": f"{tag}_arrays.{epoch}.h5"}
    with atomic_path(os.path.join(directory, files["params"])) as tmp:
        nn.save_parameters(tmp, OrderedDict(params))
    arrays: List[np.ndarray] = []
    plain = _split_arrays(dict(state), arrays)
    with atomic_path(os.path.join(directory, files["arrays"])) as tmp:
        with h5py.File(tmp, "w") as f:
            for i, a in enumerate(arrays):
                f.create_dataset(str(i), data=a)
    record = {
        "format": FORMAT,
        "tag": tag,
        "epoch": int(epoch),
        "files": files,
        "sha256": {k: file_digest(os.path.join(directory, v)) for k, v in files.items()},
        "state": plain,
    }
    write_json(record_path, record)
    remove_stale_files(directory, tag, keep=set(files.values()))


def remove_stale_files(directory: str, tag: str, keep: set) -> None:
    """Delete ``tag``'s data files that the current record does not name."""
    pattern = re.compile(rf"^{re.escape(tag)}_(params|arrays)\.\d+\.h5$")
    for name in os.listdir(directory):
        if pattern.match(name) and name not in keep:
            os.remove(os.path.join(directory, name))


def remove_temporary_files(directory: str) -> List[str]:
    """Delete the temporary files an interrupted atomic write left in ``directory``; returns their names."""
    if not os.path.isdir(directory):
        return []
    removed = [n for n in os.listdir(directory) if _TMP.match(n) and os.path.isfile(os.path.join(directory, n))]
    for name in removed:
        os.remove(os.path.join(directory, name))
    return removed


@dataclass
class Checkpoint:
    """A verified checkpoint: its epoch, the path of its weights file, its restored state and its record's path."""

    tag: str
    epoch: int
    params_path: str
    state: Dict[str, Any]
    record_path: str = ""

    def parameters(self) -> "OrderedDict[str, np.ndarray]":
        """The saved weights by name."""
        return read_parameters(self.params_path)


def has_checkpoint(directory: str | None, tag: str) -> bool:
    """Whether ``directory`` holds a checkpoint record of ``tag``."""
    return bool(directory) and os.path.isfile(os.path.join(directory, f"{tag}_state.json"))


def read_checkpoint(directory: str, tag: str) -> Checkpoint:
    """Read and verify the current checkpoint of ``tag``; any damage is one CheckpointError line."""
    record_path = os.path.join(directory, f"{tag}_state.json")
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{record_path}: missing; nothing to resume for {tag!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{record_path}: damaged checkpoint record ({_reason(err)})") from None
    try:
        if record.get("format") != FORMAT or record.get("tag") != tag:
            raise CheckpointError(f"{record_path}: not a {tag!r} checkpoint record of format {FORMAT}")
        files, digests, epoch, plain = record["files"], record["sha256"], int(record["epoch"]), record["state"]
        paths = {kind: os.path.join(directory, files[kind]) for kind in ("params", "arrays")}
        digests = {kind: digests[kind] for kind in paths}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{record_path}: damaged checkpoint record (missing or bad {_reason(err)})") from None
    for kind, path in paths.items():
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: missing (named by {os.path.basename(record_path)})")
        if file_digest(path) != digests[kind]:
            raise CheckpointError(f"{path}: damaged (its SHA-256 differs from the one recorded when it was saved)")
    arrays = _read_arrays(paths["arrays"])
    try:
        state = _join_arrays(plain, arrays)
    except KeyError as err:
        raise CheckpointError(f"{paths['arrays']}: has no array {err}; the checkpoint is inconsistent") from None
    return Checkpoint(tag, epoch, paths["params"], state, record_path)


def _read_arrays(path: str) -> Dict[int, np.ndarray]:
    try:
        with h5py.File(path, "r") as f:
            return {int(k): np.asarray(f[k]) for k in f.keys()}
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({_reason(err)})") from None


def read_parameters(path: str) -> "OrderedDict[str, np.ndarray]":
    """Weights saved by ``nn.save_parameters`` as ``{name: array}``, read without touching nnabla's global scope."""
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    try:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = np.asarray(obj)

        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({_reason(err)})") from None
    return out


def load_parameters(params: Mapping[str, nn.Variable], path: str, what: str = "network") -> None:
    """Copy saved weights into existing Variables; every name and shape must match (one-line error otherwise)."""
    saved = read_parameters(path)
    missing = [k for k in params if k not in saved]
    extra = [k for k in saved if k not in params]
    if missing or extra:
        detail = f"no saved value for {missing[0]!r}" if missing else f"unknown saved parameter {extra[0]!r}"
        raise CheckpointError(
            f"{path}: does not fit the {what} ({detail}); was the search space or its params changed since?"
        )
    for k, v in params.items():
        if saved[k].shape != tuple(v.shape):
            raise CheckpointError(
                f"{path}: {k} has shape {saved[k].shape}, the {what} has {tuple(v.shape)}; "
                "was the search space or its params changed since?"
            )
    for k, v in params.items():
        v.d = saved[k]


def restore_rng(rng: np.random.Generator, state: Mapping[str, Any], what: str) -> None:
    """Set a numpy Generator's state from a checkpoint (one-line error if it is not one)."""
    try:
        rng.bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{what}: bad random-generator state ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text}" if not isinstance(err, (KeyError,)) else f"key {text}"
