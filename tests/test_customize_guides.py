"""The customisation guides (docs/customize/*.md) are executed: every ``sh`` block runs, in order, in a fresh copy
of the project, and every run a guide starts completes search -> retrain -> test with its scaffolded component."""

import glob
import json
import os
import re
import subprocess

import pytest
import yaml
from scaffolding import REPO, copy_project

GUIDES = sorted(glob.glob(os.path.join(REPO, "docs", "customize", "*.md")))
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def shell_blocks(path):
    """The ``sh`` code blocks of a guide, in order."""
    with open(path, encoding="utf-8") as f:
        return BLOCK.findall(f.read())


def registered_names(script):
    """What each ``build_interface.py`` command registers: the class of search spaces, else the name."""
    names = []
    for line in script.splitlines():
        if "build_interface.py" in line:
            name = re.search(r"--customize-name (\w+)", line).group(1)
            cls = re.search(r"--customize-class (\w+)", line).group(1)
            names.append(cls if "-t search_space" in line else name)
    return names


def test_every_kind_has_a_guide():
    kinds = sorted(os.path.basename(d) for d in glob.glob(os.path.join(REPO, "templates", "*")) if os.path.isdir(d))
    assert [os.path.splitext(os.path.basename(g))[0] for g in GUIDES] == kinds


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=[os.path.basename(g) for g in GUIDES])
def test_guide_commands_run_from_a_fresh_copy(guide, tmp_path):
    root = copy_project(str(tmp_path / "project"))
    blocks = shell_blocks(guide)
    assert blocks, f"{guide} has no sh block"
    for block in blocks:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=root, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{os.path.basename(guide)}:\n{block}\n{proc.stdout}\n{proc.stderr}"
    script = "\n".join(blocks)
    made = registered_names(script)
    assert made, "the guide scaffolds nothing"
    runs = re.findall(r"main\.py .*?--title (\S+)", script.replace("\\\n", " "))
    assert runs, "the guide runs no search"
    used = set()
    for title in runs:
        run_dir = os.path.join(root, "runs", title)
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        assert "test_accuracy" in metrics, title  # searched (or generated), retrained and tested
        assert os.path.isfile(os.path.join(run_dir, "model.nnp")), title
        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
            used |= set(yaml.safe_load(f)["agent"].values())
    assert set(made) <= used, f"components scaffolded but never run: {set(made) - used}"
