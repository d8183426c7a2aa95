"""Scaffolding: render ``templates/<kind>/`` into a new, self-registering component of the project.

A kind is a folder of ``templates/`` holding ``*.py.j2`` files (or one sub-folder per style of them) and a
``kind.yaml`` with its metadata — the one place that says where a component of the kind goes, how it is
registered and which base class its template fills:

    package: search_strategy          # the package the component is written into
    layout: module                    # module: <package>/<name>.py from the one *.py.j2 | package: <package>/<name>/
    registered_as: name               # the registry key: name (--customize-name) or class (--customize-class)
    base: search_strategy.base:BaseSearchStrategy   # module:Class the template fills (or one per style)
    styles: [macro, free_form]        # optional: sub-folders of templates, chosen by --style (first = default)

Templates are Jinja2 (StrictUndefined) with ``customize_name``, ``customize_class``, ``registered_name``, ``kind``
and ``style``; ``config.yaml.j2`` renders the YAML lines that enable the component. Every file is rendered and
parsed before anything is written, and the files appear in one rename, so a refusal or failure writes nothing.
"""

from __future__ import annotations

import ast
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.machinery import all_suffixes
from typing import Any, Dict, List, Tuple

import jinja2
import yaml

from core.errors import ScaffoldError
from core.suggest import did_you_mean

TEMPLATE_SUFFIX = ".py.j2"
CONFIG_TEMPLATE = "config.yaml.j2"
KIND_FILE = "kind.yaml"
MAX_IDENTIFIER = 30  # keeps every generated line within the 120-column limit
NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
CLASS_RE = re.compile(r"[A-Z][A-Za-z0-9]*\Z")
LAYOUTS = ("module", "package")
REGISTERED_AS = ("name", "class")

# Asks the target project (run with cwd=root) what the registry filling package argv[1] holds: its names and
# the class names behind them (a space registers a bundle: its supernet class counts).
_REGISTRY_PROBE = """
import json, sys
from core import registries
from core.registry import Registry
found = [r for r in vars(registries).values() if isinstance(r, Registry) and r.package == sys.argv[1]]
def cls(obj):
    obj = getattr(obj, "supernet", obj)
    return getattr(obj, "__name__", None)
print(json.dumps({"kind": found[0].kind, "names": {n: cls(found[0].get(n)) for n in found[0].names()}}
                 if found else None))
"""


@dataclass(frozen=True)
class Kind:
    """One scaffoldable kind: its template folder and ``kind.yaml`` metadata."""

    name: str
    folder: str
    package: str
    layout: str = "package"
    registered_as: str = "class"
    #: ``module:Class`` the templates fill, or one per style
    base: str | Dict[str, str] | None = None
    styles: Tuple[str, ...] = ()

    def template_dir(self, style: str | None) -> str:
        """The folder holding the templates of ``style`` (the kind's folder when it has no styles)."""
        return os.path.join(self.folder, style) if self.styles else self.folder

    def base_class(self, style: str | None) -> str | None:
        """``module:Class`` of the base class the templates of ``style`` fill."""
        return self.base.get(style or "") if isinstance(self.base, dict) else self.base

    def registered_name(self, name: str, class_name: str) -> str:
        """The registry key of a component called ``name`` / ``class_name``."""
        return name if self.registered_as == "name" else class_name

    def target(self, root: str, name: str) -> str:
        """Where the component goes: ``<package>/<name>.py`` or ``<package>/<name>/``."""
        return os.path.join(root, self.package, f"{name}.py" if self.layout == "module" else name)


def _has_templates(folder: str) -> bool:
    return os.path.isdir(folder) and any(f.endswith(TEMPLATE_SUFFIX) for f in os.listdir(folder))


def template_kinds(root: str) -> List[str]:
    """The scaffoldable kinds: folders of ``<root>/templates`` with templates (directly or in style folders)."""
    base = os.path.join(root, "templates")
    if not os.path.isdir(base):
        return []
    kinds = []
    for d in sorted(os.listdir(base)):
        folder = os.path.join(base, d)
        if d.startswith((".", "_")) or not os.path.isdir(folder):
            continue
        if _has_templates(folder) or any(_has_templates(os.path.join(folder, s)) for s in os.listdir(folder)):
            kinds.append(d)
    return kinds


def load_kind(root: str, kind: str) -> Kind:
    """The kind's metadata (``kind.yaml``; without one: a package named like the kind, registered by class)."""
    kinds = template_kinds(root)
    if kind not in kinds:
        valid = ", ".join(kinds) or "none (no templates/ folder)"
        raise ScaffoldError(f"unknown kind {kind!r}{did_you_mean(kind, kinds)}; valid: {valid}")
    folder = os.path.join(root, "templates", kind)
    meta: Dict[str, Any] = {}
    path = os.path.join(folder, KIND_FILE)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                meta = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ScaffoldError(f"templates/{kind}/{KIND_FILE}: cannot read it ({err})") from None
    where = f"templates/{kind}/{KIND_FILE}"
    known = {"package", "layout", "registered_as", "base", "styles"}
    if not isinstance(meta, dict) or set(meta) - known:
        extra = sorted(set(meta) - known) if isinstance(meta, dict) else ["(not a mapping)"]
        raise ScaffoldError(f"{where}: unknown key {extra[0]!r}; valid: {', '.join(sorted(known))}")
    spec = Kind(kind, folder, str(meta.get("package", kind)), str(meta.get("layout", "package")),
                str(meta.get("registered_as", "class")), meta.get("base"), tuple(meta.get("styles") or ()))  # fmt: skip
    if spec.layout not in LAYOUTS:
        raise ScaffoldError(f"{where}: layout {spec.layout!r}; valid: {', '.join(LAYOUTS)}")
    if spec.registered_as not in REGISTERED_AS:
        raise ScaffoldError(f"{where}: registered_as {spec.registered_as!r}; valid: {', '.join(REGISTERED_AS)}")
    for style in spec.styles:
        if not _has_templates(spec.template_dir(style)):
            raise ScaffoldError(f"{where}: style {style!r} has no templates/{kind}/{style}/*{TEMPLATE_SUFFIX}")
    return spec


def pick_style(spec: Kind, style: str | None) -> str | None:
    """The style to render: the one asked for, or the kind's first; None for a kind without styles."""
    if not spec.styles:
        if style not in (None, "default"):
            raise ScaffoldError(f"--style {style!r}: the {spec.name} templates have no styles")
        return None
    if style is None:
        return spec.styles[0]
    if style not in spec.styles:
        raise ScaffoldError(f"--style {style!r} is not a {spec.name} style; valid: {', '.join(spec.styles)}")
    return style


def check_identifiers(root: str, spec: Kind, name: str, class_name: str) -> None:
    """Refuse names that are not valid, or whose files would clash with or leave ``<root>/<package>/``."""
    for label, value in (("--customize-name", name), ("--customize-class", class_name)):
        if keyword.iskeyword(value):
            raise ScaffoldError(f"{label} {value!r} is a Python keyword; choose another")
    if not NAME_RE.match(name):
        raise ScaffoldError(
            f"--customize-name {name!r} must be a lowercase Python identifier: a-z, 0-9 and _, starting with a letter "
            "(e.g. my_space)"
        )
    if not CLASS_RE.match(class_name):
        raise ScaffoldError(
            f"--customize-class {class_name!r} must be a CapWords Python identifier: A-Z, a-z and 0-9, starting "
            "with a capital (e.g. MySpace)"
        )
    for label, value in (("--customize-name", name), ("--customize-class", class_name)):
        if len(value) > MAX_IDENTIFIER:
            raise ScaffoldError(f"{label} {value!r} is longer than {MAX_IDENTIFIER} characters")
    package_dir = os.path.join(root, spec.package)
    real_root, real_package = os.path.realpath(root), os.path.realpath(package_dir)
    if os.path.commonpath([real_root, real_package]) != real_root or real_package == real_root:
        raise ScaffoldError(f"templates/{spec.name}/{KIND_FILE}: package {spec.package!r} is not a folder of {root}")
    if not os.path.isdir(package_dir) or not os.path.isfile(os.path.join(package_dir, "__init__.py")):
        raise ScaffoldError(f"package folder {package_dir} does not exist (kind {spec.name!r} writes into it)")
    target = spec.target(root, name)
    if os.path.dirname(os.path.realpath(target)) != real_package:
        raise ScaffoldError(f"{os.path.relpath(target, root)} would be written outside {spec.package}/; refused")
    if os.path.lexists(target):
        raise ScaffoldError(f"{os.path.relpath(target, root)} already exists; choose another --customize-name")
    clash = [name + s for s in ("", *all_suffixes()) if os.path.lexists(os.path.join(package_dir, name + s))]
    if clash:
        raise ScaffoldError(f"--customize-name {name!r} clashes with {os.path.join(spec.package, clash[0])}")


def check_registry(root: str, spec: Kind, name: str, class_name: str) -> None:
    """Refuse a registration name, or a class name, that the kind's registry already holds (asked of ``root``)."""
    proc = subprocess.run(
        [sys.executable, "-B", "-c", _REGISTRY_PROBE, spec.package],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        reason = err[-1] if err else f"exit code {proc.returncode}, no output"
        raise ScaffoldError(f"cannot load the {spec.package} registry to check for name clashes: {reason}")
    found = json.loads(lines[-1])
    if found is None:
        raise ScaffoldError(f"no registry in core/registries.py fills package {spec.package!r}; nothing could register")
    key = spec.registered_name(name, class_name)
    flag = "--customize-name" if spec.registered_as == "name" else "--customize-class"
    if key in found["names"]:
        raise ScaffoldError(
            f"{found['kind']} {key!r} is already registered; choose another {flag} "
            f"(registered: {', '.join(found['names'])})"
        )
    owners = [n for n, cls in found["names"].items() if cls and cls in (class_name, f"{class_name}Supernet")]
    if owners:
        raise ScaffoldError(
            f"--customize-class {class_name!r}: the registered {found['kind']} {owners[0]!r} already has that class; "
            "choose another"
        )


def _environment(template_dir: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


def _render_one(env: jinja2.Environment, template: str, context: Dict[str, str]) -> str:
    try:
        return env.get_template(template).render(**context)
    except jinja2.TemplateError as err:
        where = f" line {err.lineno}" if getattr(err, "lineno", None) else ""
        raise ScaffoldError(f"template {template}{where}: {err.message or type(err).__name__}") from None


def output_name(spec: Kind, template: str, name: str) -> str:
    """The file a template becomes: ``<name>.py`` (module layout); in a package, dunder modules keep their name
    and others get the ``<name>_`` prefix."""
    stem = template[: -len(".j2")]
    if spec.layout == "module":
        return f"{name}.py"
    return stem if stem.startswith("__") else f"{name}_{stem}"


def render(spec: Kind, style: str | None, context: Dict[str, str]) -> Dict[str, str]:
    """``{file name: source}`` of every ``*.py.j2`` of the style; each must parse as Python."""
    template_dir = spec.template_dir(style)
    where = os.path.relpath(template_dir, os.path.dirname(os.path.dirname(spec.folder)))
    templates = sorted(f for f in os.listdir(template_dir) if f.endswith(TEMPLATE_SUFFIX))
    if spec.layout == "module" and len(templates) != 1:
        raise ScaffoldError(
            f"{where}: a module-layout kind needs exactly one *{TEMPLATE_SUFFIX}, found {len(templates)}"
        )
    env = _environment(template_dir)
    out: Dict[str, str] = {}
    for template in templates:
        text = _render_one(env, template, context)
        try:
            tree = ast.parse(text, filename=template)
        except SyntaxError as err:
            raise ScaffoldError(f"{where}/{template} renders invalid Python (line {err.lineno}: {err.msg})") from None
        twice = _bound_twice(tree)
        if twice:
            raise ScaffoldError(
                f"--customize-class {context['customize_class']!r} makes {where}/{template} bind {twice!r} "
                "twice (it clashes with a name the template imports); choose another class name"
            )
        out[output_name(spec, template, context["customize_name"])] = text
    return out


def _bound_twice(tree: ast.Module) -> str | None:
    """The first module-level name that imports and class/function definitions bind more than once."""
    seen = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [node.name]
        else:
            continue
        for name in names:
            if name in seen:
                return name
            seen.add(name)
    return None


def render_config(spec: Kind, style: str | None, context: Dict[str, str]) -> str | None:
    """The YAML lines enabling the new component, if the style (or the kind) has a ``config.yaml.j2``."""
    for folder in (spec.template_dir(style), spec.folder):
        if os.path.isfile(os.path.join(folder, CONFIG_TEMPLATE)):
            return _render_one(_environment(folder), CONFIG_TEMPLATE, context)
    return None


def write_component(spec: Kind, target: str, files: Dict[str, str]) -> List[str]:
    """Write ``files`` into a hidden temp folder next to ``target``, then move them into place in one rename."""
    package_dir, name = os.path.dirname(target), os.path.basename(target)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=package_dir)  # a dotted name: never imported
    try:
        staged = os.path.join(tmp, name)
        if spec.layout == "package":
            os.mkdir(staged)
        for file_name, text in files.items():
            path = staged if spec.layout == "module" else os.path.join(staged, file_name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        if os.path.lexists(target):
            raise ScaffoldError(f"{target} appeared while scaffolding; nothing written")
        os.rename(staged, target)
    except OSError as err:
        raise ScaffoldError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [target] if spec.layout == "module" else [os.path.join(target, f) for f in sorted(files)]


@dataclass(frozen=True)
class Plan:
    """What scaffolding one component writes: the files (path -> source) and the enabling YAML."""

    kind: Kind
    style: str | None
    registered_name: str
    target: str
    files: Dict[str, str]
    config: str | None

    def paths(self) -> List[str]:
        """The paths of the files to write, sorted."""
        if self.kind.layout == "module":
            return [self.target]
        return [os.path.join(self.target, f) for f in sorted(self.files)]

    def write(self) -> List[str]:
        """Write the files (in one rename); returns their paths."""
        return write_component(self.kind, self.target, self.files)


def plan(root: str, kind: str, name: str, class_name: str, style: str | None = None) -> Plan:
    """Check everything and render one component, writing nothing."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ScaffoldError(f"--root {root} is not a directory")
    spec = load_kind(root, kind)
    chosen = pick_style(spec, style)
    check_identifiers(root, spec, name, class_name)
    check_registry(root, spec, name, class_name)
    registered = spec.registered_name(name, class_name)
    context = {
        "customize_name": name,
        "customize_class": class_name,
        "registered_name": registered,
        "kind": kind,
        "style": chosen or "default",
    }
    files = render(spec, chosen, context)
    return Plan(spec, chosen, registered, spec.target(root, name), files, render_config(spec, chosen, context))
