"""Convert plain YAML data into frozen dataclasses, naming the dotted path of any bad value."""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Dict, Mapping, Type, TypeVar, Union

from core.errors import ConfigError
from core.suggest import did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """A numeric bound attached to a config field with ``Annotated[int, Range(ge=1)]``; checked on load."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float, path: str) -> None:
        """ConfigError naming ``path`` when ``value`` lies outside the range (NaN never fits)."""
        bad = isinstance(value, float) and math.isnan(value)
        bad = bad or (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
        bad = bad or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt)
        if bad:
            raise ConfigError(f"{path}: must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        """The range in words, e.g. ``>= 1`` or ``in [0, 1]``."""
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


#: the bounds most config fields need
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1)]
OpenFraction = Annotated[float, Range(gt=0, lt=1)]


def from_dict(cls: Type[T], data: Any, path: str) -> T:
    """Build dataclass ``cls`` from mapping ``data``; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{_join(path, str(key))}: unknown key{did_you_mean(str(key), fields)}")
    kwargs: Dict[str, Any] = {}
    for name, field in fields.items():
        sub = _join(path, name)
        if name in data:
            kwargs[name] = convert(hints[name], data[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: missing required key")
    return cls(**kwargs)


def check_ranges(obj: Any, path: str) -> None:
    """Check every ``Range``-annotated field of dataclass ``obj`` (and nested ones), for objects built in code."""
    if obj is None:  # a component without params
        return
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        convert(hints[f.name], to_plain(getattr(obj, f.name)), _join(path, f.name))


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check/convert one value against a type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        out = convert(args[0], value, path)
        for bound in args[1:]:
            if isinstance(bound, Range) and out is not None:
                bound.check(out, path)
        return out
    if origin in (Union, getattr(types, "UnionType", Union)):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the precise one
            return convert(options[0], value, path)
        for arg in options:
            try:
                return convert(arg, value, path)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{path}: expected {names}, got {_show(value)}")
    if origin is typing.Literal:
        if value not in args:
            valid = ", ".join(str(a) for a in args)
            hint = did_you_mean(str(value), [str(a) for a in args])
            raise ConfigError(f"{path}: invalid value {value!r}{hint}; valid: {valid}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return tuple(convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


def to_plain(obj: Any) -> Any:
    """Turn dataclasses/tuples into plain dicts/lists for YAML or JSON dumps."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "null"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + "/".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))
