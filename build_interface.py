"""Scaffold a new component from ``templates/<kind>/``: a runnable sub-package plus the YAML that enables it.

    python build_interface.py -t search_space --customize-name my_space --customize-class MySpace

renders every ``templates/<kind>/*.py.j2`` into ``<kind>/<name>/`` (``__init__.py.j2`` keeps its name, ``x.py.j2``
becomes ``<name>_x.py``) and prints ``templates/<kind>/config.yaml.j2``. The kinds are the template folders, so a
new folder is a new kind. No existing file is edited: the kind's registry imports every sub-package itself.
"""

from __future__ import annotations

import argparse
import ast
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.machinery import all_suffixes
from typing import Dict, List, NoReturn, Sequence

import jinja2

from core.errors import ScaffoldError

TEMPLATE_SUFFIX = ".py.j2"
CONFIG_TEMPLATE = "config.yaml.j2"
MAX_IDENTIFIER = 30  # keeps every generated line within the 120-column limit
NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
CLASS_RE = re.compile(r"[A-Z][A-Za-z0-9]*\Z")
DEFAULT_ROOT = os.path.dirname(os.path.abspath(__file__))

# Asks the target project (run with cwd=root) which names the registry filling package argv[1] holds.
_REGISTRY_PROBE = """
import json, sys
from core import registries
from core.registry import Registry
found = [r for r in vars(registries).values() if isinstance(r, Registry) and r.package == sys.argv[1]]
print(json.dumps({"kind": found[0].kind, "names": found[0].names()} if found else None))
"""


def template_kinds(root: str) -> List[str]:
    """The scaffoldable kinds: folders of ``<root>/templates`` holding at least one ``*.py.j2``."""
    base = os.path.join(root, "templates")
    if not os.path.isdir(base):
        return []
    folders = [os.path.join(base, d) for d in sorted(os.listdir(base)) if not d.startswith((".", "_"))]
    return [
        os.path.basename(d)
        for d in folders
        if os.path.isdir(d) and any(f.endswith(TEMPLATE_SUFFIX) for f in os.listdir(d))
    ]


def output_name(template: str, name: str) -> str:
    """File name rendered from ``template``: dunder modules keep their name, others get the ``<name>_`` prefix."""
    stem = template[: -len(".j2")]
    return stem if stem.startswith("__") else f"{name}_{stem}"


def check_identifiers(root: str, kind: str, name: str, class_name: str) -> None:
    """Refuse names that are not valid, or that clash with something already in ``<root>/<kind>/``."""
    kinds = template_kinds(root)
    if kind not in kinds:
        raise ScaffoldError(f"unknown kind {kind!r}; valid: {', '.join(kinds) or 'none (no templates/ folder)'}")
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
    package_dir = os.path.join(root, kind)
    if not os.path.isdir(package_dir):
        raise ScaffoldError(f"package folder {package_dir} does not exist")
    target = os.path.join(package_dir, name)
    if os.path.lexists(target):
        raise ScaffoldError(f"{os.path.join(kind, name)} already exists; choose another --customize-name")
    clash = [name + s for s in all_suffixes() if os.path.lexists(os.path.join(package_dir, name + s))]
    if clash:
        raise ScaffoldError(f"--customize-name {name!r} clashes with the module {os.path.join(kind, clash[0])}")


def check_registry(root: str, kind: str, class_name: str) -> None:
    """Refuse a registration name the kind's registry already holds (asked of the project at ``root``)."""
    proc = subprocess.run(
        [sys.executable, "-B", "-c", _REGISTRY_PROBE, kind], cwd=root, capture_output=True, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        reason = err[-1] if err else f"exit code {proc.returncode}, no output"
        raise ScaffoldError(f"cannot load the {kind} registry to check for name clashes: {reason}")
    found = json.loads(lines[-1])
    if found is None:
        raise ScaffoldError(f"no registry in core/registries.py fills package {kind!r}; a {kind} could not register")
    if class_name in found["names"]:
        raise ScaffoldError(
            f"{found['kind']} {class_name!r} is already registered; choose another --customize-class "
            f"(registered: {', '.join(found['names'])})"
        )


def render(root: str, kind: str, context: Dict[str, str]) -> Dict[str, str]:
    """``{file name: source}`` of every ``*.py.j2`` of the kind; each must parse as Python."""
    template_dir = os.path.join(root, "templates", kind)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    out: Dict[str, str] = {}
    for template in sorted(f for f in os.listdir(template_dir) if f.endswith(TEMPLATE_SUFFIX)):
        text = _render_one(env, template, context)
        try:
            tree = ast.parse(text, filename=template)
        except SyntaxError as err:
            raise ScaffoldError(
                f"templates/{kind}/{template} renders invalid Python (line {err.lineno}: {err.msg})"
            ) from None
        twice = _bound_twice(tree)
        if twice:
            raise ScaffoldError(
                f"--customize-class {context['customize_class']!r} makes templates/{kind}/{template} bind {twice!r} "
                "twice (it clashes with a name the template imports); choose another class name"
            )
        out[output_name(template, context["customize_name"])] = text
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


def render_config(root: str, kind: str, context: Dict[str, str]) -> str | None:
    """The YAML lines enabling the new component, if the kind has a ``config.yaml.j2``."""
    template_dir = os.path.join(root, "templates", kind)
    if not os.path.isfile(os.path.join(template_dir, CONFIG_TEMPLATE)):
        return None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir), undefined=jinja2.StrictUndefined)
    return _render_one(env, CONFIG_TEMPLATE, context)


def _render_one(env: jinja2.Environment, template: str, context: Dict[str, str]) -> str:
    try:
        return env.get_template(template).render(**context)
    except jinja2.TemplateError as err:
        where = f" line {err.lineno}" if getattr(err, "lineno", None) else ""
        raise ScaffoldError(f"template {template}{where}: {err.message or type(err).__name__}") from None


def write_package(package_dir: str, name: str, files: Dict[str, str]) -> List[str]:
    """Write ``files`` into a hidden temp folder next to the target, then move it into place in one rename."""
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=package_dir)  # a dotted name: never imported as a package
    try:
        staged = os.path.join(tmp, name)
        os.mkdir(staged)
        for file_name, text in files.items():
            with open(os.path.join(staged, file_name), "w", encoding="utf-8") as f:
                f.write(text)
        target = os.path.join(package_dir, name)
        if os.path.lexists(target):
            raise ScaffoldError(f"{target} appeared while scaffolding; nothing written")
        os.rename(staged, target)
    except OSError as err:
        raise ScaffoldError(f"cannot write {os.path.join(package_dir, name)}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [os.path.join(target, f) for f in sorted(files)]


def scaffold(root: str, kind: str, name: str, class_name: str) -> tuple[List[str], str | None]:
    """Check, render and write one component; return the created paths and the enabling YAML."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ScaffoldError(f"--root {root} is not a directory")
    check_identifiers(root, kind, name, class_name)
    check_registry(root, kind, class_name)
    context = {"customize_name": name, "customize_class": class_name, "kind": kind}
    files = render(root, kind, context)
    config = render_config(root, kind, context)
    return write_package(os.path.join(root, kind), name, files), config


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), like every other refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


_EPILOG = """\
what gets written (nothing else is edited; the kind's registry imports every sub-package itself):
  templates/<kind>/__init__.py.j2  ->  <kind>/<name>/__init__.py
  templates/<kind>/x.py.j2         ->  <kind>/<name>/<name>_x.py
  templates/<kind>/config.yaml.j2  ->  printed: the YAML lines that enable the new component
  Templates are Jinja2 (StrictUndefined) with customize_name, customize_class and kind. Every file is rendered
  and parsed before the package is moved into place in one rename, so a failure leaves nothing behind.

refused with exit code 2, one line on stderr and nothing written:
  an unknown kind; a name that is not a lowercase identifier (or is a keyword, starts with "_", is longer than 30
  characters, or clashes with a module of <kind>/); a class that is not CapWords (or is a keyword, is too long,
  or makes a template bind an imported name twice, e.g. Base -> BaseSupernet); an existing <kind>/<name>/;
  a class already registered in the kind's registry (read from the project at --root).

example:
  python build_interface.py -t search_space --customize-name my_space --customize-class MySpace
  -> search_space/my_space/{__init__,my_space_supernet,my_space_model,my_space_lookup_table}.py
     enabled by:  agent: {search_space_agent: MySpace}
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line, documented in ``--help``."""
    kinds = template_kinds(DEFAULT_ROOT)
    parser = _OneLineParser(
        prog="build_interface.py",
        description="Scaffold a runnable component (a self-registering sub-package) from templates/<kind>/\n"
        "and print the YAML lines that enable it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-t",
        "--type",
        dest="kind",
        required=True,
        metavar="KIND",
        help=f"what to scaffold: a folder of <root>/templates/ (here: {', '.join(kinds) or 'none'})",
    )
    parser.add_argument(
        "--customize-name",
        required=True,
        metavar="NAME",
        help="package and file-name prefix, e.g. my_space: a lowercase Python identifier of at most "
        f"{MAX_IDENTIFIER} characters, not yet in <kind>/",
    )
    parser.add_argument(
        "--customize-class",
        required=True,
        metavar="CLASS",
        help="class-name prefix and registration name, e.g. MySpace (MySpaceSupernet, ...; "
        "selected by search_space_agent: MySpace): CapWords, not yet registered",
    )
    parser.add_argument(
        "--root",
        default=DEFAULT_ROOT,
        metavar="DIR",
        help="project root holding templates/ and the <kind>/ packages (default: the folder of "
        "build_interface.py, %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes are one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        created, config = scaffold(args.root, args.kind, args.customize_name, args.customize_class)
    except ScaffoldError as err:
        print(f"build_interface.py: error: {err}", file=sys.stderr)
        return 2
    root = os.path.abspath(args.root)
    print(f"created {args.kind} {args.customize_class!r} in {root}:")
    for path in created:
        print(f"  {os.path.relpath(path, root)}")
    if config:
        print("enable it in your config YAML:")
        print(config.rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
