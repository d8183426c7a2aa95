"""Helpers of the scaffolding tests: a temporary copy of the project, its CLI, snapshots, scripts run inside it.

Everything runs in subprocesses with ``cwd`` = the copy, so the copy's packages (with the scaffolded components)
are imported, never the repository's.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__", ".pytest_cache", ".ruff_cache")
TOP_FILES = ("build_interface.py", "main.py", "pyproject.toml", "nnabla.conf")


def copy_project(dest: str) -> str:
    """Copy the project's Python packages, templates/, configs/, docs/ and top-level files into ``dest``, with
    ``.venv`` linked to the repository's (so the guides' ``.venv/bin/python`` works there)."""
    os.makedirs(dest, exist_ok=True)
    for entry in sorted(os.listdir(REPO)):
        src = os.path.join(REPO, entry)
        is_package = os.path.isdir(src) and os.path.isfile(os.path.join(src, "__init__.py"))
        if is_package or entry in ("templates", "configs", "docs"):
            shutil.copytree(src, os.path.join(dest, entry), ignore=IGNORE)
    for entry in TOP_FILES:
        shutil.copy2(os.path.join(REPO, entry), dest)
    venv = os.path.join(REPO, ".venv")
    if os.path.isdir(venv):
        os.symlink(venv, os.path.join(dest, ".venv"))
    return dest


def run_cli(root: str, *args: str) -> subprocess.CompletedProcess:
    """Run the copy's build_interface.py against the copy."""
    return subprocess.run(
        [sys.executable, os.path.join(root, "build_interface.py"), *args, "--root", root],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scaffold_args(name: str, cls: str, kind: str = "search_space", *extra: str) -> list:
    """The CLI arguments scaffolding ``name`` / ``cls`` of ``kind``."""
    return ["-t", kind, "--customize-name", name, "--customize-class", cls, *extra]


def snapshot(root: str) -> dict:
    """``{relative path: sha1}`` of every file and folder (bytecode caches and the linked venv left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".venv"))
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = ""
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.join(rel, f)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def assert_refused(root: str, args: list, expected: str) -> subprocess.CompletedProcess:
    """The CLI refuses ``args`` with exit code 2, one line on stderr containing ``expected``, and writes nothing."""
    before = snapshot(root)
    result = run_cli(root, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert expected in lines[0], lines[0]
    assert snapshot(root) == before
    return result


def run_in(root: str, script: str, timeout: int = 120) -> dict:
    """Run ``script`` with the copy's packages; it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-B", "-c", textwrap.dedent(script)], cwd=root, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ruff_executable() -> str | None:
    """The project's ruff, if installed."""
    found = os.path.join(REPO, ".venv", "bin", "ruff")
    return found if os.path.isfile(found) else shutil.which("ruff")
