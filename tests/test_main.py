"""End to end: main.py on digits with tiny budgets, the run directory, evaluate agent, CLI errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

import main
from core.config import load_config
from core.export import run_nnp, run_onnx
from core.registries import DATASETS
from dataset.base import STREAM_TEST, split_indices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "train.epochs=2",
    "train.max_steps_per_epoch=4",
    "retrain.epochs=2",
    "retrain.max_steps_per_epoch=4",
    "search_strategy.population=4",
    "search_strategy.generations=2",
    "search_strategy.parents=2",
    "search.valid_batches=1",
    "search.bn_recalibration_batches=1",
]


def run_main(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "main.py", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main.main(["-c", "configs/demo.yml", "--title", "e2e", "--output-dir", str(out), "--quiet", *TINY]) == 0
    return out / "e2e"


def test_search_run_directory(search_run):
    names = set(os.listdir(search_run))
    assert {
        "config.yaml",
        "log.txt",
        "tb",
        "checkpoints",
        "lookup_table.json",
        "searched_arch.json",
        "search_history.json",
        "metrics.json",
        "arch.png",
        "search.png",
        "pareto.png",
        "model.nnp",
        "model.onnx",
    } <= names
    assert any(f.startswith("events") for f in os.listdir(search_run / "tb"))
    ckpt = set(os.listdir(search_run / "checkpoints"))
    assert {"supernet_params.2.h5", "supernet_state.json", "retrain_params.2.h5", "retrain_state.json"} <= ckpt
    assert not [n for n in os.listdir(search_run) if n.startswith(".")]  # no temporary file left behind
    assert all(os.stat(search_run / n).st_mode & 0o044 for n in ("metrics.json", "model.nnp", "arch.png"))
    cfg = yaml.safe_load((search_run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["agent"]["search_space_agent"] == "ProxylessNAS"
    searched = json.loads((search_run / "searched_arch.json").read_text())
    metrics = json.loads((search_run / "metrics.json").read_text())
    assert searched["arch"] == metrics["arch"]
    # the budget holds and the lookup table agrees with the retrained model's own graph count
    assert searched["flops"] <= searched["target_hc"] == 1_200_000
    assert metrics["model_flops"] == searched["flops"] and metrics["model_params"] == searched["params"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    history = json.loads((search_run / "search_history.json").read_text())
    assert history["evaluations"] == len(history["history"]) <= 8
    assert all(h["cost"] <= 1_200_000 for h in history["history"])
    log = (search_run / "log.txt").read_text()
    assert "[supernet] epoch 2/2" in log and "test accuracy" in log


def test_exported_models_take_raw_images_and_reproduce_the_test_accuracy(search_run):
    """model.nnp / model.onnx on scikit-learn's raw 0..16 digits give the run's own test accuracy."""
    cfg = load_config(str(search_run / "config.yaml"))
    data = DATASETS.get("digits")(cfg.dataset).load()
    raw = load_digits().images.astype(np.float32)[:, None]  # (N, 1, 8, 8), pixel values 0..16
    test_idx, _ = split_indices(load_digits().target, cfg.dataset.test_portion, cfg.dataset.split_seed, STREAM_TEST)
    raw_test = raw[test_idx]
    np.testing.assert_allclose((raw_test - data.mean[0]) / data.std[0], data.test.images, atol=1e-5)
    metrics = json.loads((search_run / "metrics.json").read_text())
    for out in (run_nnp(str(search_run / "model.nnp"), raw_test), run_onnx(str(search_run / "model.onnx"), raw_test)):
        acc = float(np.mean(out.argmax(1) == data.test.labels[:, 0]))
        assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert metrics["export"]["nnp_max_abs_diff"] <= 1e-4 and metrics["export"]["onnx_max_abs_diff"] <= 1e-4


def test_evaluate_agent_retrains_a_saved_arch(search_run, tmp_path):
    args = [
        "-c",
        "configs/demo.yml",
        "--title",
        "ev",
        "--output-dir",
        str(tmp_path),
        "--quiet",
        "agent.main_agent=evaluate",
        f"evaluate.arch_path={search_run / 'searched_arch.json'}",
        "retrain.epochs=1",
        "retrain.max_steps_per_epoch=2",
    ]
    assert main.main(args) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    searched = json.loads((search_run / "searched_arch.json").read_text())
    assert metrics["arch"] == searched["arch"] and metrics["flops"] == searched["flops"]


def test_cli_misspelt_key_exits_2_with_one_line(tmp_path):
    for override in ("search_strategy.populaton=3", "train.epocs=1"):
        res = run_main("-c", "configs/demo.yml", "--output-dir", str(tmp_path), override)
        assert res.returncode == 2
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
        assert "unknown key (did you mean" in res.stderr
    assert os.listdir(tmp_path) == []
    res = run_main("-c", "configs/demo.yml", "--output-dir", str(tmp_path), "search_strategy.populaton=3")
    assert res.stderr.strip() == "error: search_strategy.populaton: unknown key (did you mean population?)"


def test_cli_misspelt_key_in_yaml(tmp_path):
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs/demo.yml")))
    raw["train"]["epcohs"] = 3
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(raw))
    res = run_main("-c", str(path), "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and res.stderr.strip() == "error: train.epcohs: unknown key (did you mean epochs?)"


def test_existing_run_directory_is_never_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("precious")
    res = run_main("-c", "configs/demo.yml", "--title", "taken", "--output-dir", str(tmp_path))
    assert res.returncode == 2 and "already exists" in res.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "precious"


def test_unreachable_budget_is_a_clear_error(tmp_path):
    res = run_main(
        "-c", "configs/demo.yml", "--title", "b", "--output-dir", str(tmp_path), "hardware.target_hc=1000", *TINY
    )
    assert res.returncode == 2 and "hardware.target_hc: 1000 is below the cheapest" in res.stderr
    assert not (tmp_path / "b").exists()


def test_missing_arch_file_for_evaluate(tmp_path):
    res = run_main(
        "-c",
        "configs/demo.yml",
        "--output-dir",
        str(tmp_path),
        "agent.main_agent=evaluate",
        "evaluate.arch_path=nope.json",
    )
    assert res.returncode == 2 and "evaluate.arch_path" in res.stderr


def test_resume_continues_from_the_checkpoint(tmp_path):
    tiny = [a for a in TINY if not a.startswith("train.epochs")] + ["search.retrain=false", "--quiet"]
    assert (
        main.main(["-c", "configs/demo.yml", "--title", "r", "--output-dir", str(tmp_path), "train.epochs=1", *tiny])
        == 0
    )
    run_dir = tmp_path / "r"
    state = json.loads((run_dir / "checkpoints" / "supernet_state.json").read_text())
    assert state["epoch"] == 1
    assert main.main(["--resume", str(run_dir), "train.epochs=2", "--quiet"]) == 0
    log = (run_dir / "log.txt").read_text()
    assert "[supernet] resumed after epoch 1" in log and "[supernet] epoch 2/2" in log
    assert log.count("[supernet] epoch 1/") == 1  # epoch 1 was not trained again
    state = json.loads((run_dir / "checkpoints" / "supernet_state.json").read_text())
    assert state["epoch"] == 2 and len(state["state"]["history"]) == 2
    assert "set aside a search journal of another supernet" in log  # the search of the 1-epoch supernet is stale
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2


def test_resume_needs_a_run_directory(tmp_path):
    res = run_main("--resume", str(tmp_path))
    assert res.returncode == 2 and "not a run directory" in res.stderr


def test_cudnn_without_the_extension_is_a_clear_error(tmp_path):
    try:
        import nnabla_ext.cudnn  # noqa: F401

        pytest.skip("nnabla-ext-cuda is installed here")
    except ImportError:
        pass
    res = run_main("-c", "configs/demo.yml", "--title", "gpu", "--output-dir", str(tmp_path), "context=cudnn")
    assert res.returncode == 2 and "nnabla-ext-cuda" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "gpu").exists()
