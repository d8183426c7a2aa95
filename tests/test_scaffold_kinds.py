"""Every scaffoldable kind: two components of a kind in a row register and import, the generated classes fill
their kind's base class with its exact signatures, and every refusal (or --dry-run) writes nothing."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from scaffolding import REPO, assert_refused, copy_project, ruff_executable, run_cli, scaffold_args, snapshot

#: (kind, style, first name, first class, second name, second class); a name registers snake_case kinds
CASES = [
    ("search_space", "macro", "macro_a", "MacroA", "macro_b", "MacroB"),
    ("search_space", "free_form", "free_a", "FreeA", "free_b", "FreeB"),
    ("search_strategy", None, "search_a", "SearchA", "search_b", "SearchB"),
    ("training_strategy", None, "policy_a", "PolicyA", "policy_b", "PolicyB"),
    ("criterion", None, "loss_a", "LossA", "loss_b", "LossB"),
    ("dataset", None, "data_a", "DataA", "data_b", "DataB"),
    ("agent", None, "agent_a", "AgentA", "agent_b", "AgentB"),
]
#: kind -> the registry attribute of core.registries
REGISTRY = {
    "search_space": "SEARCH_SPACES",
    "search_strategy": "SEARCH_STRATEGIES",
    "training_strategy": "TRAINING_STRATEGIES",
    "criterion": "CRITERIA",
    "dataset": "DATASETS",
    "agent": "AGENTS",
}


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    """A copy of the project with two components of every kind (and style) scaffolded in a row."""
    root = copy_project(str(tmp_path_factory.mktemp("kinds")))
    results = {}
    for kind, style, *names in CASES:
        extra = ("--style", style) if style else ()
        for name, cls in (names[:2], names[2:]):
            before = snapshot(root)
            results[name] = (run_cli(root, *scaffold_args(name, cls, kind, *extra)), before, snapshot(root))
    return root, results


def check_templates(root, cases):
    """``tests/template_check.py`` run in the copy (its packages, with the scaffolded components)."""
    script = os.path.join(REPO, "tests", "template_check.py")
    proc = subprocess.run(
        [sys.executable, "-B", script, json.dumps(cases)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def registered_key(kind, name, cls):
    return cls if kind == "search_space" else name


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1] or 'default'}" for c in CASES])
def test_two_components_of_a_kind_register_and_fill_the_base(scaffolded, case):
    root, results = scaffolded
    kind, style, *names = case
    with open(os.path.join(REPO, "templates", kind, "kind.yaml"), encoding="utf-8") as f:
        meta = yaml.safe_load(f)
    keys = []
    for name, cls in (names[:2], names[2:]):
        result, before, after = results[name]
        assert result.returncode == 0, result.stderr
        module = meta["layout"] == "module"
        target = f"{meta['package']}/{name}.py" if module else f"{meta['package']}/{name}/"
        new = sorted(k for k in after if k not in before)
        assert new[0] == target and all(k.startswith(target) for k in new), new
        assert {k: v for k, v in after.items() if k in before} == before  # no existing file edited
        assert f"  {target}" in result.stdout
        enable = yaml.safe_load(result.stdout[result.stdout.index("agent:") :])
        key = registered_key(kind, name, cls)
        assert key in enable["agent"].values()
        keys.append(key)
    report = check_templates(root, [[kind, style, key, REGISTRY[kind]] for key in keys])
    for key in keys:
        assert report[key]["subclass"], report[key]
        assert report[key]["abstract"] == [], report[key]
        assert report[key]["mismatch"] == [], report[key]


def test_generated_code_of_every_kind_passes_ruff(scaffolded):
    ruff = ruff_executable()
    if ruff is None:
        pytest.skip("ruff is not installed")
    root, results = scaffolded
    paths = []
    for kind, _, *names in CASES:
        with open(os.path.join(REPO, "templates", kind, "kind.yaml"), encoding="utf-8") as f:
            meta = yaml.safe_load(f)
        for name in names[::2]:
            paths.append(os.path.join(root, meta["package"], name + (".py" if meta["layout"] == "module" else "")))
    config = os.path.join(REPO, "pyproject.toml")
    for cmd in (["check"], ["format", "--check"]):
        proc = subprocess.run([ruff, *cmd, "--no-cache", "--config", config, *paths], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (scaffold_args("random_search", "Other", "search_strategy"), "search_strategy/random_search.py already exists"),
        (scaffold_args("random", "Other", "search_strategy"), "search strategy 'random' is already registered"),
        (scaffold_args("other", "RandomSearch", "search_strategy"), "'random' already has that class"),
        (scaffold_args("search_a", "Other", "search_strategy"), "search_strategy/search_a.py already exists"),
        (scaffold_args("loss_b", "Other", "criterion"), "criterion/loss_b.py already exists"),
        (scaffold_args("cross_entropy", "Other", "criterion"), "criterion/cross_entropy.py already exists"),
        (scaffold_args("knowledge_distillation", "Other", "criterion"), "criterion 'knowledge_distillation' is"),
        (scaffold_args("uniform", "Other", "training_strategy"), "training_strategy/uniform.py already exists"),
        (scaffold_args("digits", "Other", "dataset"), "dataset/digits.py already exists"),
        (scaffold_args("search", "Other", "agent"), "agent 'search' is already registered"),
        (scaffold_args("other", "FBNet", "search_space"), "'FBNet' is already registered"),
        (scaffold_args("other", "MacroA", "search_space"), "'MacroA' is already registered"),
        (scaffold_args("lambda", "Other", "dataset"), "keyword"),
        (scaffold_args("other", "Other", "search_space", "--style", "cells"), "valid: macro, free_form"),
        (scaffold_args("other", "Other", "criterion", "--style", "free_form"), "have no styles"),
    ],
)
def test_refusals_of_every_kind_write_nothing(scaffolded, args, expected):
    assert_refused(scaffolded[0], args, expected)


def test_dry_run_prints_the_files_and_writes_nothing(scaffolded):
    root = scaffolded[0]
    before = snapshot(root)
    result = run_cli(root, *scaffold_args("dry_loss", "DryLoss", "criterion", "--dry-run"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("would create criterion 'dry_loss'")
    assert "  criterion/dry_loss.py" in result.stdout and '    | @CRITERIA.register("dry_loss")' in result.stdout
    assert "criterion_agent: dry_loss" in result.stdout
    assert snapshot(root) == before


def test_a_package_outside_the_project_is_refused(tmp_path):
    root = copy_project(str(tmp_path / "project"))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "__init__.py").write_text("")
    kind_file = os.path.join(root, "templates", "criterion", "kind.yaml")
    with open(kind_file, encoding="utf-8") as f:
        meta = yaml.safe_load(f)
    meta["package"] = "../outside"
    with open(kind_file, "w", encoding="utf-8") as f:
        yaml.safe_dump(meta, f)
    before = snapshot(str(tmp_path))
    result = run_cli(root, *scaffold_args("my_loss", "MyLoss", "criterion"))
    assert result.returncode == 2 and "is not a folder of" in result.stderr, result.stderr
    assert snapshot(str(tmp_path)) == before
