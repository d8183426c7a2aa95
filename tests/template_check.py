"""Run inside a project copy: ``python template_check.py JSON`` with ``[[kind, style, key, registry], ...]``.

Imports every registered component made from the templates and compares each generated class with the project
classes it derives from: every method it overrides keeps the parameters (names, kinds, defaults) of the base's, no
abstract method is left, and the registered class derives from the kind's base (``templates/<kind>/kind.yaml``).
Params dataclasses must be frozen with a default for every field. Prints one JSON line
``{key: {"subclass", "abstract", "mismatch", "classes"}}``.
"""

import dataclasses
import importlib
import inspect
import json
import os
import sys

sys.path.insert(0, os.getcwd())  # the copy's packages, not this file's folder

import yaml  # noqa: E402

from core import registries  # noqa: E402

PROJECT = ("agent", "core", "criterion", "dataset", "hardware", "search_space", "search_strategy", "training_strategy")


def parameters(fn):
    """``[(name, kind, default)]`` of a callable's signature (annotations may differ: a template narrows them)."""
    return [(p.name, str(p.kind), repr(p.default)) for p in inspect.signature(fn).parameters.values()]


def base_of(kind, style):
    with open(os.path.join("templates", kind, "kind.yaml"), encoding="utf-8") as f:
        base = yaml.safe_load(f)["base"]
    module_name, class_name = (base[style] if isinstance(base, dict) else base).split(":")
    return getattr(importlib.import_module(module_name), class_name)


def check(kind, style, key, registry):
    obj = getattr(registries, registry).get(key)
    main = getattr(obj, "supernet", obj)  # a search space registers a bundle around its supernet class
    generated = main.__module__.rsplit(".", 1)[0] if kind == "search_space" else main.__module__
    ours = lambda module: module == generated or module.startswith(generated + ".")  # noqa: E731
    theirs = lambda cls: cls.__module__.split(".")[0] in PROJECT and not ours(cls.__module__)  # noqa: E731
    report = {"subclass": issubclass(main, base_of(kind, style)), "abstract": [], "mismatch": [], "classes": []}
    for name, module in sorted(sys.modules.items()):
        if module is None or not ours(name):
            continue
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == name):
                continue
            report["classes"].append(cls.__name__)
            if dataclasses.is_dataclass(cls):  # a Params section: frozen, every field with a default
                if not cls.__dataclass_params__.frozen or any(
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                    for f in dataclasses.fields(cls)
                ):
                    report["mismatch"].append([cls.__name__, "Params must be frozen with a default for every field"])
                continue
            if inspect.isabstract(cls):
                report["abstract"].append([cls.__name__, sorted(cls.__abstractmethods__)])
            for attr, member in vars(cls).items():
                if inspect.isclass(member) or not callable(getattr(cls, attr)):
                    continue
                if attr.startswith("__") and attr not in ("__init__", "__call__"):
                    continue
                parents = [b for b in cls.__mro__[1:] if attr in vars(b) and theirs(b)]
                if parents and parameters(getattr(cls, attr)) != parameters(getattr(parents[0], attr)):
                    report["mismatch"].append(
                        [f"{cls.__name__}.{attr}", parameters(getattr(cls, attr)), parents[0].__qualname__]
                    )
    return report


if __name__ == "__main__":
    print(
        json.dumps({key: check(kind, style, key, registry) for kind, style, key, registry in json.loads(sys.argv[1])})
    )
