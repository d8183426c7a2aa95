"""Scaffold a new component from ``templates/<kind>/``: a runnable, self-registering module or package plus the
YAML that enables it.

    python build_interface.py -t search_space --customize-name my_space --customize-class MySpace
    python build_interface.py -t criterion --customize-name my_loss --customize-class MyLoss --dry-run

Each kind's ``templates/<kind>/kind.yaml`` says where its components go and how they are registered (see
``core/scaffold.py``). No existing file is edited: the kind's registry imports every module of its package itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from core.errors import ScaffoldError
from core.scaffold import MAX_IDENTIFIER, Plan, load_kind, plan, template_kinds

DEFAULT_ROOT = os.path.dirname(os.path.abspath(__file__))


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), like every other refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def kinds_table(root: str) -> str:
    """One line per kind: where its components go and what selects them."""
    lines = []
    for kind in template_kinds(root):
        try:
            spec = load_kind(root, kind)
        except ScaffoldError as err:
            lines.append(f"  {kind:<18} (unusable: {err})")
            continue
        where = f"{spec.package}/<name>.py" if spec.layout == "module" else f"{spec.package}/<name>/"
        key = "--customize-name" if spec.registered_as == "name" else "--customize-class"
        styles = f"; --style {' | '.join(spec.styles)}" if spec.styles else ""
        lines.append(f"  {kind:<18} -> {where:<28} registered as {key}{styles}")
    return "\n".join(lines)


_EPILOG = """\
kinds (templates/<kind>/kind.yaml says where each goes and how it registers):
{kinds}

what gets written (nothing else is edited; the kind's registry imports every module of its package itself):
  module layout:   templates/<kind>/x.py.j2  ->  <package>/<name>.py
  package layout:  templates/<kind>/__init__.py.j2  ->  <package>/<name>/__init__.py
                   templates/<kind>/x.py.j2         ->  <package>/<name>/<name>_x.py
  templates/<kind>/config.yaml.j2  ->  printed: the YAML lines that enable the new component
  Templates are Jinja2 (StrictUndefined) with customize_name, customize_class, registered_name, kind and style.
  Every file is rendered and parsed before anything moves into place in one rename: a failure leaves nothing.

refused with exit code 2, one line on stderr and nothing written:
  an unknown kind or style; a name that is not a lowercase identifier (or is a keyword, starts with "_", is longer
  than 30 characters, or clashes with a module of <package>/); a class that is not CapWords (or is a keyword, is
  too long, or makes a template bind an imported name twice, e.g. Base -> BaseSupernet); a file or folder that
  exists; a path outside the kind's package; a name or class the kind's registry already holds (read from the
  project at --root).

examples:
  python build_interface.py -t search_space --customize-name my_space --customize-class MySpace
  -> search_space/my_space/{{__init__,my_space_supernet,my_space_model,my_space_lookup_table}}.py
     enabled by:  agent: {{search_space_agent: MySpace}}
  python build_interface.py -t search_strategy --customize-name my_search --customize-class MySearch
  -> search_strategy/my_search.py, enabled by:  agent: {{search_strategy_agent: my_search}}
"""


def build_parser(root: str = DEFAULT_ROOT) -> argparse.ArgumentParser:
    """The command line, documented in ``--help``."""
    kinds = template_kinds(root)
    parser = _OneLineParser(
        prog="build_interface.py",
        description="Scaffold a runnable component (a self-registering module or package) from templates/<kind>/\n"
        "and print the YAML lines that enable it.",
        epilog=_EPILOG.format(kinds=kinds_table(root) or "  none"),
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
        help="module / package name, e.g. my_space: a lowercase Python identifier of at most "
        f"{MAX_IDENTIFIER} characters, not yet in the kind's package; the registration name of snake_case kinds",
    )
    parser.add_argument(
        "--customize-class",
        required=True,
        metavar="CLASS",
        help="class-name prefix, e.g. MySpace (MySpaceSupernet, ...): CapWords, not yet registered; the "
        "registration name of CapWords kinds (search spaces: search_space_agent: MySpace)",
    )
    parser.add_argument("--style", metavar="STYLE", help="template variant of kinds that have several (see above)")
    parser.add_argument("--dry-run", action="store_true", help="print the files and YAML it would write; write nothing")
    parser.add_argument(
        "--root",
        default=root,
        metavar="DIR",
        help="project root holding templates/ and the packages (default: the folder of build_interface.py, "
        "%(default)s)",
    )
    return parser


def report(job: Plan, root: str, written: bool) -> str:
    """What was (or would be) written, and the YAML that enables it."""
    what = "created" if written else "would create"
    lines = [f"{what} {job.kind.name} {job.registered_name!r} in {root}:"]
    for path in job.paths():
        lines.append(f"  {os.path.relpath(path, root)}")
        if not written:
            lines.extend(f"    | {line}" for line in job.files[os.path.basename(path)].splitlines())
    if job.config:
        lines.append("enable it in your config YAML:")
        lines.append(job.config.rstrip("\n"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes are one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    root = os.path.abspath(args.root)
    try:
        job = plan(root, args.kind, args.customize_name, args.customize_class, args.style)
        if not args.dry_run:
            job.write()
    except ScaffoldError as err:
        print(f"build_interface.py: error: {err}", file=sys.stderr)
        return 2
    print(report(job, root, written=not args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
