"""One registry per component kind, filled by a decorator; packages import their own submodules."""

import importlib
import pkgutil
from typing import Callable, Dict, Generic, Iterator, List, TypeVar

from core.errors import RegistryError, UnknownComponentError
from core.suggest import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps component names to classes (or specs) of one kind.

    ``package`` names the Python package whose modules fill the registry; it and every submodule
    are imported on the first look-up, so a new file registers itself just by existing and callers
    never import component modules themselves. The package's ``__init__`` stays import-light.
    """

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._items: Dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (by {self._describe(self._items[name])}); "
                "choose another name"
            )
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the component registered as ``name`` or raise listing the valid names."""
        self._load()
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "none registered"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; valid: {valid}"
            )
        return self._items[name]

    def names(self) -> List[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _load(self) -> None:
        """Import the package and all its submodules once (they register themselves)."""
        if self.package is None or self._loaded:
            return
        self._loaded = True
        try:
            pkg = importlib.import_module(self.package)
            import_submodules(self.package, list(pkg.__path__))
        except BaseException:
            self._loaded = False
            raise

    @staticmethod
    def _describe(obj: object) -> str:
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def import_submodules(package_name: str, package_path: List[str]) -> None:
    """Import every module and sub-package of a package so that their registrations run.

    Used by registries on first look-up and by a component sub-package's ``__init__`` for its own
    files. Private modules (leading underscore) are skipped.
    """
    for info in pkgutil.iter_modules(package_path):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{package_name}.{info.name}")
