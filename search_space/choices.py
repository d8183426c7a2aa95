"""Framework-free space vocabulary: a space is ``{label: Categorical(values)}``, an arch ``{label: value}``."""

import itertools
import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import numpy as np

from core.errors import ArchitectureError
from core.suggest import did_you_mean

Arch = Dict[str, Any]
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Categorical:
    """One decision: pick exactly one of ``values`` (JSON scalars, unique, non-empty).

    The choice protocol every strategy works with: ``values`` enumerates the options (so index encoding,
    uniform sampling and budget-aware sampling work for every kind of choice), ``normalize`` turns a
    value read from JSON into its canonical form, ``mutate`` proposes a neighbouring value, ``to_json``
    describes the choice as plain data.
    """

    values: Tuple[Any, ...]

    def __post_init__(self) -> None:
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        if not values:
            raise ArchitectureError(f"a {type(self).__name__} needs at least one value")
        self._check_values(values)
        if len(set(values)) != len(values):
            raise ArchitectureError(f"{type(self).__name__} values must be unique, got {list(values)}")

    @staticmethod
    def _check_values(values: Tuple[Any, ...]) -> None:
        for v in values:
            if not isinstance(v, _JSON_SCALARS):
                raise ArchitectureError(f"Categorical value {v!r} is not a JSON scalar")

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int:
        """Position of ``value`` among the values."""
        return self.values.index(self.normalize(value))

    def normalize(self, value: Any) -> Any:
        """The canonical form of ``value`` (as read back from JSON); values themselves are checked elsewhere."""
        return value

    def sample(self, rng: np.random.Generator) -> Any:
        """A uniformly random value."""
        return self.values[int(rng.integers(len(self.values)))]

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        """A uniformly random value other than ``value`` (``value`` itself when there is no other)."""
        if len(self.values) == 1:
            return self.values[0]
        i = self.index(value)
        j = int(rng.integers(len(self.values) - 1))
        return self.values[j + 1 if j >= i else j]

    def to_json(self) -> Any:
        """Plain-data description: the list of values."""
        return list(self.values)


class Subset(Categorical):
    """Pick ``k`` of ``n`` inputs (or any number, 0..n, when ``k`` is None): a value is a sorted index tuple.

    The decision of an InputChoice; ``Subset(1, None)`` is "this one input or none".
    """

    def __init__(self, n: int, k: int | None = 1):
        if not isinstance(n, int) or n < 1 or (k is not None and not 0 <= k <= n):
            raise ArchitectureError(f"Subset: need n >= 1 and 0 <= k <= n (or k None), got n={n}, k={k}")
        sizes = range(n + 1) if k is None else [k]
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "k", k)
        super().__init__(tuple(c for size in sizes for c in itertools.combinations(range(n), size)))

    @staticmethod
    def _check_values(values: Tuple[Any, ...]) -> None:
        """Index tuples are generated, never given."""

    def __repr__(self) -> str:
        return f"Subset(n={self.n}, k={self.k})"

    def normalize(self, value: Any) -> Any:
        """A list or tuple of input indices as a sorted tuple (JSON has no tuples)."""
        if isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            return tuple(sorted(value))
        return value

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        """Swap one chosen input for an unchosen one (or, with any number allowed, add or drop one)."""
        chosen = list(self.normalize(value))
        others = [i for i in range(self.n) if i not in chosen]
        moves = [("swap", a, b) for a in chosen for b in others] if self.k is not None else []
        if self.k is None:
            moves = [("add", None, b) for b in others] + [("drop", a, None) for a in chosen]
        if not moves:
            return tuple(chosen)
        kind, a, b = moves[int(rng.integers(len(moves)))]
        out = [i for i in chosen if i != a] + ([b] if b is not None else [])
        return tuple(sorted(out))

    def to_json(self) -> Any:
        """``{"subset": n, "chosen": k}``."""
        return {"subset": self.n, "chosen": self.k}


def choice_from_json(data: Any) -> Categorical:
    """Inverse of ``to_json`` for every choice kind."""
    if isinstance(data, Mapping) and "subset" in data:
        return Subset(int(data["subset"]), data.get("chosen"))
    return Categorical(tuple(data))


class SearchSpaceChoices(Mapping[str, Categorical]):
    """An ordered, immutable set of labelled decisions: the plain-data face of a search space."""

    def __init__(self, items: Union[Mapping[str, Categorical], Sequence[Tuple[str, Categorical]]]):
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        self._items: Dict[str, Categorical] = {}
        for label, cat in pairs:
            if not isinstance(label, str) or not label:
                raise ArchitectureError(f"choice labels must be non-empty strings, got {label!r}")
            if not isinstance(cat, Categorical):
                cat = Categorical(tuple(cat))
            if label in self._items and self._items[label] != cat:
                raise ArchitectureError(
                    f"label {label!r} is shared by choices with different values: "
                    f"{list(self._items[label].values)} vs {list(cat.values)}"
                )
            self._items[label] = cat

    def __getitem__(self, label: str) -> Categorical:
        return self._items[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpaceChoices) and list(self._items.items()) == list(other._items.items())

    def __repr__(self) -> str:
        return f"SearchSpaceChoices({len(self)} labels, {self.size():.3g} architectures)"

    @property
    def labels(self) -> List[str]:
        """Labels in order."""
        return list(self._items)

    def size(self) -> float:
        """Number of distinct architectures (a float: it is often astronomically large)."""
        return float(np.prod([float(len(c)) for c in self._items.values()]))

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture, each label drawn independently from ``rng``."""
        return {label: cat.sample(rng) for label, cat in self._items.items()}

    def validate(self, arch: Mapping[str, Any]) -> Arch:
        """Return ``arch`` as an ordered dict if it fits; raise ArchitectureError naming the bad label."""
        if not isinstance(arch, Mapping):
            raise ArchitectureError(f"an architecture is a mapping label -> value, got {type(arch).__name__}")
        for label in arch:
            if label not in self._items:
                raise ArchitectureError(f"unknown label {label!r}{did_you_mean(str(label), self._items)}")
        out: Arch = {}
        for label, cat in self._items.items():
            if label not in arch:
                raise ArchitectureError(f"label {label!r} has no value; valid: {list(cat.values)}")
            value = cat.normalize(arch[label])
            if value not in cat.values:
                raise ArchitectureError(
                    f"label {label!r}: invalid value {value!r}{did_you_mean(str(value), map(str, cat.values))}; "
                    f"valid: {list(cat.values)}"
                )
            out[label] = value
        return out

    def to_indices(self, arch: Mapping[str, Any]) -> List[int]:
        """Encode an architecture as one index per label."""
        arch = self.validate(arch)
        return [cat.index(arch[label]) for label, cat in self._items.items()]

    def from_indices(self, indices: Sequence[int]) -> Arch:
        """Decode one index per label into an architecture."""
        if len(indices) != len(self._items):
            raise ArchitectureError(f"expected {len(self._items)} indices, got {len(indices)}")
        out: Arch = {}
        for (label, cat), i in zip(self._items.items(), indices):
            if not 0 <= int(i) < len(cat):
                raise ArchitectureError(f"label {label!r}: index {i} out of range 0..{len(cat) - 1}")
            out[label] = cat.values[int(i)]
        return out

    def to_dict(self) -> Dict[str, Any]:
        """Plain ``{label: [values] | {"subset": n, "chosen": k}}`` (JSON-ready)."""
        return {label: cat.to_json() for label, cat in self._items.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpaceChoices":
        """Inverse of ``to_dict``."""
        return cls([(label, choice_from_json(values)) for label, values in data.items()])


def encode_arch(arch: Mapping[str, Any]) -> str:
    """The one JSON encoding of an architecture (label order kept; subset tuples become lists)."""
    return json.dumps(dict(arch))


def decode_arch(text: str) -> Arch:
    """Inverse of ``encode_arch``; accepts the wrapped ``{"arch": {...}}`` file form too."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArchitectureError(f"architecture is not valid JSON: {err.msg} (line {err.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        data = data["arch"]
    if not isinstance(data, dict):
        raise ArchitectureError("architecture JSON must be an object label -> value")
    return data


def arch_key(arch: Mapping[str, Any]) -> str:
    """A hashable, order-independent key for caching per architecture."""
    return json.dumps(dict(arch), sort_keys=True)
