"""The lookup-table accuracy report (python -m hardware.validate): exact where the table is exact, figures that
are those of the recorded measurements, calibration networks left out, and refusals that leave nothing behind."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from core.config import load_config
from core.registries import SEARCH_SPACES
from hardware import validate
from hardware.measure import MeasureSettings, measure_module
from hardware.tables import calibration_archs
from search_space.choices import arch_key
from search_space.spec import DataInfo

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.yml")
FAST = ("hardware.warmup=0", "hardware.runs=1", "hardware.calibration_samples=3")


def run(tmp_path, *args):
    return validate.main(["-c", DEMO, "--output-dir", str(tmp_path), "--title", "v", "--quiet", *args])


def report(tmp_path):
    with open(tmp_path / "v" / "lut_accuracy.json", encoding="utf-8") as f:
        return json.load(f)


def test_counted_flops_are_predicted_exactly(tmp_path):
    assert run(tmp_path, "--samples", "6", "--metric", "flops") == 0
    rep = report(tmp_path)
    assert rep["samples"] == 6 and len({arch_key(n["arch"]) for n in rep["networks"]}) == 6
    assert rep["raw"]["mape"] == 0.0 and rep["raw"]["max_ape"] == 0.0
    assert rep["raw"]["spearman"] == pytest.approx(1.0) and rep["raw"]["kendall_tau"] == pytest.approx(1.0)
    assert "calibrated" not in rep  # a counted metric needs none
    assert sorted(os.listdir(tmp_path / "v")) == [
        "log.txt",
        "lookup_table.json",
        "lut_accuracy.json",
        "lut_accuracy.png",
    ]
    with open(tmp_path / "v" / "lut_accuracy.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_memory_report_holds_the_measurements_and_their_figures(tmp_path):
    assert run(tmp_path, "--samples", "5", "--metric", "memory", *FAST) == 0
    rep = report(tmp_path)
    cfg = load_config(DEMO)
    space = SEARCH_SPACES.get("ProxylessNAS")
    info = DataInfo(num_classes=10, in_channels=1, input_size=8)
    nets = rep["networks"]
    for net in nets[:2]:  # memory is deterministic: an independent measurement of the same network agrees
        model = space.build_model(cfg.search_space, info, net["arch"])
        assert net["measured"] == measure_module(model, (1, 8, 8), ["memory"], MeasureSettings())["memory"]
    measured = np.array([n["measured"] for n in nets])
    for kind, key in (("raw", "predicted_raw"), ("calibrated", "predicted")):
        predicted = np.array([n[key] for n in nets])
        assert rep[kind]["spearman"] == pytest.approx(stats.spearmanr(predicted, measured).statistic)
        assert rep[kind]["mape"] == pytest.approx(np.mean(np.abs(predicted - measured) / measured))
    cal = rep["calibration"]
    raw = np.array([n["predicted_raw"] for n in nets])
    assert np.allclose([n["predicted"] for n in nets], cal["scale"] * raw + cal["offset"])
    # out of sample: none of the networks the calibration was fitted on is validated
    fitted_on = {arch_key(a) for a in calibration_archs(space.choices(cfg.search_space, info), 3)}
    assert not fitted_on & {arch_key(n["arch"]) for n in nets}


def test_figures_by_hand():
    f = validate.accuracy_figures(np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 2.0, 4.0, 4.0]))
    assert f["mape"] == pytest.approx((0 + 0 + 0.25 + 0.25) / 4)
    assert f["max_ape"] == pytest.approx(0.25) and f["bias"] == pytest.approx(0.0)
    assert f["spearman"] == pytest.approx(stats.spearmanr([1, 2, 3, 5], [1, 2, 4, 4]).statistic)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--samples", "1"), "error: --samples: must be >= 2"),
        (("--samples", "4", "hardware.runz=3"), "error: hardware.runz: unknown key (did you mean runs?)"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_directory(tmp_path, capsys, args, message):
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
    assert not (tmp_path / "v").exists()


def test_an_existing_report_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "lut_accuracy.json").write_text("{}")
    assert run(tmp_path, "--samples", "3", "--metric", "flops") == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "v" / "lut_accuracy.json").read_text() == "{}"
