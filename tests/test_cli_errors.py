"""Bad input through main.py: every malformed value, unknown name or impossible combination (on the command line
or in a YAML file) exits 2 with ONE stderr line ``error: <key or file>: ...``, no traceback, and no run directory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image
from test_main import TINY

from core.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo.yml")
SMALL = [*TINY, "search.retrain=false", "dataset.input_size=8"]
TITLE = "t"

# (test id, overrides applied after SMALL, the dotted key the error line must start with)
BAD_VALUES = [
    # wrong types
    ("epochs_not_int", ["train.epochs=abc"], "train.epochs"),
    ("seed_float", ["seed=1.5"], "seed"),
    ("target_hc_list", ["hardware.target_hc=[1]"], "hardware.target_hc"),
    ("retrain_flag_not_bool", ["search.retrain=maybe"], "search.retrain"),
    ("stages_not_list", ["search_space.stages=3"], "search_space.stages"),
    # ranges
    ("seed_negative", ["seed=-1"], "seed"),
    ("checkpoint_every_zero", ["train.checkpoint_every=0"], "train.checkpoint_every"),
    ("batch_size_zero", ["train.batch_size=0"], "train.batch_size"),
    ("mutation_prob_above_1", ["search_strategy.mutation_prob=1.5"], "search_strategy.mutation_prob"),
    ("train_portion_1", ["dataset.train_portion=1"], "dataset.train_portion"),
    ("lr_zero", ["train.optimizer.lr=0"], "train.optimizer.lr"),
    ("lr_nan", ["train.optimizer.lr=.nan"], "train.optimizer.lr"),
    ("width_mult_negative", ["search_space.width_mult=-1"], "search_space.width_mult"),
    ("smoothing_1", ["criterion.smoothing=1"], "criterion.smoothing"),
    ("momentum_1", ["train.optimizer.momentum=1"], "train.optimizer.momentum"),
    # unknown names
    ("strategy_misspelt", ["agent.search_strategy_agent=evolutoin"], "agent.search_strategy_agent"),
    ("dataset_unknown", ["agent.dataset_agent=mnist"], "agent.dataset_agent"),
    ("main_agent_unknown", ["agent.main_agent=serach"], "agent.main_agent"),
    ("optimizer_unknown", ["train.optimizer.name=adamm"], "train.optimizer.name"),
    ("key_misspelt", ["search_space.widht_mult=2"], "search_space.widht_mult"),
    # impossible combinations
    (
        "parents_over_population",
        ["search_strategy.population=16", "search_strategy.parents=50"],
        "search_strategy.parents",
    ),
    ("objective_not_measured", ["search_strategy.objective=loss"], "search_strategy.objective"),
    ("batch_over_train_split", ["train.batch_size=4096"], "train.batch_size"),
    ("retrain_batch_over_split", ["retrain.batch_size=4096"], "retrain.batch_size"),
    ("mini_batch_not_divisor", ["train.mini_batch=24"], "train.mini_batch"),
    ("budget_below_cheapest", ["hardware.target_hc=1000"], "hardware.target_hc"),
    ("warmup_over_epochs", ["train.warmup_epochs=5"], "train.warmup_epochs"),
]


def start(*args):
    """main.py in a subprocess (started, not awaited: two cases share the two cores)."""
    return subprocess.Popen(
        [sys.executable, "main.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc):
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_main(*args):
    return finish(start(*args))


def run_config(config, out, *extra):
    """``main.py -c config`` as a quiet run titled TITLE in ``out``, plus ``extra`` arguments."""
    return run_main("-c", str(config), "--title", TITLE, "--output-dir", str(out), "--quiet", *extra)


def set_dotted(raw, override):
    """Set ``a.b=value`` in a nested dict the way a user would write it in YAML."""
    key, value = override.split("=", 1)
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def write_config(path, overrides):
    """demo.yml with ``overrides`` written into the file itself."""
    with open(DEMO, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    for override in overrides:
        set_dotted(raw, override)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def assert_refused(res, out, must_start):
    """Exit 2, exactly one stderr line ``error: <must_start>...``, no traceback, no run directory."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {must_start}"), lines[0]
    assert not (out / TITLE).exists()
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize("overrides, key", [pytest.param(o, k, id=i) for i, o, k in BAD_VALUES])
def test_bad_value_on_the_command_line_and_in_yaml(tmp_path, overrides, key):
    cli_out, yaml_out = tmp_path / "cli_runs", tmp_path / "yaml_runs"
    path = write_config(tmp_path / "bad.yml", [*SMALL, *overrides])
    cli = start("-c", DEMO, "--title", TITLE, "--output-dir", str(cli_out), "--quiet", *SMALL, *overrides)
    in_yaml = start("-c", str(path), "--title", TITLE, "--output-dir", str(yaml_out), "--quiet")
    cli, in_yaml = finish(cli), finish(in_yaml)
    assert_refused(cli, cli_out, key)
    assert_refused(in_yaml, yaml_out, key)
    assert in_yaml.stderr == cli.stderr  # the same value gives the same message wherever it was written


def test_missing_config_file(tmp_path):
    out = tmp_path / "runs"
    res = run_config("missing.yml", out)
    assert_refused(res, out, "config file 'missing.yml'")


def test_malformed_yaml(tmp_path):
    out = tmp_path / "runs"
    path = tmp_path / "broken.yml"
    path.write_text("seed: 0\ntrain:\n  epochs: [1, 2\n  batch_size: 32\n")
    res = run_config(path, out)
    assert_refused(res, out, f"{path} line")


def test_yaml_top_level_not_a_mapping(tmp_path):
    out = tmp_path / "runs"
    path = tmp_path / "list.yml"
    path.write_text("- seed: 0\n")
    res = run_config(path, out)
    assert_refused(res, out, f"{path}: top level must be a mapping")


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param("train.epochs", "override 'train.epochs': expected key.sub=value", id="no_equals"),
        pytest.param("train..epochs=1", "override 'train..epochs=1': empty key part", id="empty_key_part"),
        pytest.param("train.epochs=[1", "override 'train.epochs=[1': value is not valid YAML", id="bad_yaml_value"),
        pytest.param("train.epochs.x=1", "train.epochs: is a value, cannot set train.epochs.x", id="below_a_value"),
    ],
)
def test_malformed_override(tmp_path, override, message):
    out = tmp_path / "runs"
    res = run_config(DEMO, out, override)
    assert_refused(res, out, message)


def test_single_class_image_folder(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    (root / "train" / "cat").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "train" / "cat" / f"{i}.png")
    out = tmp_path / "runs"
    res = run_config(DEMO, out, *SMALL, "agent.dataset_agent=image_folder", f"dataset.root={root}")
    assert_refused(res, out, f"image folder '{root / 'train'}' has one class folder ('cat')")
    assert "at least two" in res.stderr


def test_evaluate_without_arch_path(tmp_path):
    out = tmp_path / "runs"
    res = run_config(DEMO, out, *SMALL, "agent.main_agent=evaluate")
    assert_refused(res, out, "evaluate.arch_path")


def test_evaluate_arch_with_unknown_label(tmp_path):
    arch = {f"layer_{i}": "MB3_K3" for i in range(6)}
    arch["layer_9"] = "skip"
    path = tmp_path / "searched_arch.json"
    path.write_text(json.dumps({"arch": arch}))
    out = tmp_path / "runs"
    res = run_config(DEMO, out, *SMALL, "agent.main_agent=evaluate", f"evaluate.arch_path={path}")
    assert_refused(res, out, f"evaluate.arch_path {path}")
    assert "'layer_9'" in res.stderr


def test_exponent_without_dot_is_a_float(tmp_path):
    """``1e-3`` is a float (YAML 1.2), on the command line and in the file, not the string YAML 1.1 would read."""
    cfg = load_config(DEMO, ["train.optimizer.lr=1e-3", "retrain.optimizer.weight_decay=5E-5"])
    assert type(cfg.train.optimizer.lr) is float and cfg.train.optimizer.lr == 0.001
    assert type(cfg.retrain.optimizer.weight_decay) is float and cfg.retrain.optimizer.weight_decay == 5e-5
    path = tmp_path / "exp.yml"
    path.write_text("train:\n  optimizer: {lr: 1e-3}\n")
    cfg = load_config(str(path))
    assert type(cfg.train.optimizer.lr) is float and cfg.train.optimizer.lr == 0.001
