"""Measured lookup tables: memory against hand counts, latency tables that add up, fingerprints that decide
whether a saved table is reused, rebuilt or refused, and free-form tables round-tripping through JSON."""

import json
import logging
import time
from dataclasses import replace

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

import main
from core.config import HardwareConfig
from core.errors import ConfigError
from core.registries import SEARCH_SPACES
from hardware.measure import MeasureSettings, forward_graph, graph_memory, graphs_latency_ms, measure_module
from hardware.tables import fit_calibration, obtain_lookup_table
from search_space.blocks.basic import ConvBNAct
from search_space.darts import DARTSParams
from search_space.layers import Conv2d, Linear

LOG = logging.getLogger("test")
FAST = {"warmup": 1, "runs": 2}


def test_memory_of_small_layers_against_hand_counts():
    conv = ConvBNAct(3, 8, 1, kernel=3, activation="relu")  # 8*3*9 weights + 4 x 8 BatchNorm values
    x, y = forward_graph(conv, (3, 8, 8))
    mem = graph_memory(x, y)
    assert mem["param_bytes"] == 4 * (8 * 3 * 9 + 4 * 8)
    # peak: the conv output (8x8x8) and the BN output alive together, after the 3x8x8 input was freed
    assert mem["activation_bytes"] == 4 * (2 * 8 * 64)
    wide = Conv2d(1, 16, 1)  # input 1x4x4 and output 16x4x4 are alive together
    x, y = forward_graph(wide, (1, 4, 4), batch_size=2)
    assert graph_memory(x, y) == {"param_bytes": 4.0 * 16, "activation_bytes": 4.0 * 2 * (16 + 16 * 16)}
    fc = Linear(10, 3)
    assert measure_module(fc, (10,), ["memory"])["memory"] == 4 * (10 * 3 + 3) + 4 * (10 + 3)


def test_latency_is_a_positive_median():
    y = F.relu(forward_graph(Conv2d(3, 8, 3), (3, 16, 16))[1])
    values = [measure_module(Conv2d(3, 8, 3), (3, 16, 16), ["latency"], MeasureSettings(1, 1, 3))["latency"]]
    assert values[0] > 0 and y.shape == (1, 8, 16, 16)


def test_latency_rounds_give_every_graph_its_quiet_value():
    """A machine slow for the whole first round (another job): every graph still reads its quiet time."""

    class Graph:
        parent = "a function"
        calls = 0

        def __init__(self, fast_ms, clock):
            self.fast_ms, self.clock = fast_ms, clock

        def forward(self, clear_no_need_grad=False):
            self.calls += 1
            self.clock[0] += 1
            slow = self.clock[0] <= 3 * 5  # the first round: 3 graphs x (1 warm-up + 4 runs)
            time.sleep((self.fast_ms + (20.0 if slow else 0.0)) / 1000.0)

    clock = [0]
    graphs = [Graph(ms, clock) for ms in (1.0, 2.0, 3.0)]
    settings = MeasureSettings(batch_size=1, warmup=1, runs=8, rounds=2)
    values = graphs_latency_ms(graphs, settings)
    assert [g.calls for g in graphs] == [1 + 8] * 3  # the warm-up once, then runs / rounds per round
    for value, ms in zip(values, (1.0, 2.0, 3.0)):
        assert ms <= value < ms + 10.0  # the quiet round's median, not the slow one's (>= ms + 20)
    assert graphs_latency_ms([nn.Variable((1,))], settings) == [0.0]  # computed by nothing: a pass-through


@pytest.mark.parametrize("name", ["ProxylessNAS", "DARTS"])
def test_measured_table_predicts_the_sum_of_its_entries(name, tiny_params, digits_info):
    space = SEARCH_SPACES.get(name)
    params = tiny_params if name == "ProxylessNAS" else DARTSParams(init_channels=4, layers=3, nodes=2)
    settings = MeasureSettings(batch_size=2, **FAST)
    lut = space.build_lookup_table(params, digits_info, ("flops", "latency", "memory"), settings)
    assert lut.device != "analytic (nnabla graph count)"
    arch = lut.choices.sample(np.random.default_rng(0))
    for m in ("latency", "memory"):
        model = lut.cost_model(m)
        assert lut.predict(arch, m) == pytest.approx(model.cost(arch)) and lut.predict(arch, m) > 0
    if name == "ProxylessNAS":  # macro: base + one entry per searchable layer
        entries = [lut.info_table["latency"][label][lut.choices[label].index(arch[label])] for label in lut.choices]
        assert lut.predict(arch, "latency") == pytest.approx(lut.base["latency"] + sum(entries))


def test_saved_table_is_reused_rebuilt_or_refused_by_its_fingerprint(tmp_path, proxyless, tiny_params, digits_info):
    path = str(tmp_path / "lut.json")
    hw = HardwareConfig(info_metric="latency", lookup_table=path, **FAST)
    first = obtain_lookup_table(proxyless, tiny_params, digits_info, hw, "cpu", LOG)
    saved = json.loads(open(path).read())
    assert saved["fingerprint"]["environment"]["nnabla"] and saved["fingerprint"]["measure"]["runs"] == 2
    again = obtain_lookup_table(proxyless, tiny_params, digits_info, hw, "cpu", LOG)  # same fingerprint: reused
    arch = first.choices.sample(np.random.default_rng(1))
    assert again.predict(arch, "latency") == first.predict(arch, "latency")  # measured again it would differ
    # another measurement setting: rebuilt (and saved over the old one), or refused with one line
    other = replace(hw, batch_size=4)
    with pytest.raises(ConfigError, match=r"differs in: measure|differs in: .*measure"):
        obtain_lookup_table(proxyless, tiny_params, digits_info, replace(other, on_mismatch="refuse"), "cpu", LOG)
    assert json.loads(open(path).read()) == saved  # a refusal changes nothing
    rebuilt = obtain_lookup_table(proxyless, tiny_params, digits_info, other, "cpu", LOG)
    assert rebuilt.fingerprint["measure"]["batch_size"] == 4
    assert json.loads(open(path).read())["fingerprint"]["measure"]["batch_size"] == 4
    with open(path, "w") as f:
        f.write('{"info_table": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        obtain_lookup_table(proxyless, tiny_params, digits_info, hw, "cpu", LOG)


def test_free_form_table_round_trips(digits_info):
    space = SEARCH_SPACES.get("DARTS")
    params = DARTSParams(init_channels=4, layers=3, nodes=2)
    lut = space.build_lookup_table(params, digits_info)
    back = space.table_from_dict(json.loads(json.dumps(lut.to_dict())), params, digits_info)
    rng = np.random.default_rng(0)
    for arch in (lut.choices.sample(rng) for _ in range(5)):
        assert back.predict(arch, "flops") == lut.predict(arch, "flops")
    assert back.gates == lut.gates and back.path_gates == lut.path_gates


def test_calibration_fits_whole_networks_and_applies_everywhere(proxyless, tiny_params, digits_info):
    hw = HardwareConfig(info_metric="latency", calibration_samples=4, **FAST)
    lut = obtain_lookup_table(proxyless, tiny_params, digits_info, hw, "cpu", LOG)
    fit = lut.calibration["latency"]
    assert fit["samples"] == 4 and fit["scale"] > 0
    # what the fit minimises (relative squared error) is no worse than the raw sum's
    assert fit["fitted_rms_relative_error"] <= fit["raw_rms_relative_error"] + 1e-9
    arch = lut.choices.sample(np.random.default_rng(5))
    raw = lut.predict(arch, "latency", raw=True)
    assert lut.predict(arch, "latency") == pytest.approx(fit["scale"] * raw + fit["offset"])
    assert lut.cost_model("latency").cost(arch) == pytest.approx(lut.predict(arch, "latency"))
    assert lut.predict_batch([arch], "latency")[0] == pytest.approx(lut.predict(arch, "latency"))
    assert "flops" not in lut.calibration and lut.predict(arch, "flops") == lut.predict(arch, "flops", raw=True)
    back = proxyless.table_from_dict(json.loads(json.dumps(lut.to_dict())), tiny_params, digits_info)
    assert back.predict(arch, "latency") == pytest.approx(lut.predict(arch, "latency"))


def test_calibration_takes_the_model_that_predicts_unseen_networks_best():
    raw = np.array([10.0, 20.0, 30.0, 40.0, 55.0])
    exact = fit_calibration(raw, 0.8 * raw + 3.0)  # a true per-network offset and a scale: only affine fits it
    assert exact["model"] == "affine"
    assert exact["scale"] == pytest.approx(0.8) and exact["offset"] == pytest.approx(3.0)
    assert exact["fitted_mape"] == pytest.approx(0.0, abs=1e-12)
    assert fit_calibration(raw, 1.25 * raw)["model"] == "scale"
    # noise around the sum on a narrow range: a free slope would fit the noise; the sum (or a shift) predicts better
    rng = np.random.default_rng(0)
    narrow = rng.uniform(50.0, 60.0, 10)
    noisy = fit_calibration(narrow, narrow * (1 + rng.normal(0, 0.08, 10)))
    loo = noisy["leave_one_out_rms_relative_error"]
    assert noisy["model"] in ("sum", "offset", "scale") and loo[noisy["model"]] < loo["affine"]
    assert loo[noisy["model"]] == min(loo.values())


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["latency", "memory"])
def test_measured_budget_holds_for_the_found_network(metric, tmp_path, proxyless, tiny_params, digits_info):
    """A latency- / memory-constrained run ends with a network whose *measured* cost is within the target."""
    path = str(tmp_path / "lut.json")
    hw = HardwareConfig(info_metric=metric, lookup_table=path, warmup=1, runs=5, calibration_samples=4)
    lut = obtain_lookup_table(proxyless, tiny_params, digits_info, hw, "cpu", LOG)
    rng = np.random.default_rng(0)
    settings = MeasureSettings(1, 1, 5)
    measured = [
        measure_module(proxyless.build_model(tiny_params, digits_info, lut.choices.sample(rng)), (1, 8, 8),
                       [metric], settings)[metric]
        for _ in range(8)
    ]  # fmt: skip
    target = float(np.percentile(measured, 75))  # binding on this machine: a quarter of the space is over it
    args = ["-c", "configs/proxylessnas_latency.yml", "--title", "run", "--output-dir", str(tmp_path), "--quiet",
            "search_space={first_channels: 8, first_mb_channels: 8, stages: [[8, 2, 1], [16, 2, 2], [16, 2, 1]], "
            "last_channels: 32}", f"hardware.info_metric={metric}", f"hardware.lookup_table={path}",
            f"hardware.target_hc={target}", "hardware.warmup=1", "hardware.runs=5", "hardware.calibration_samples=4",
            "train.epochs=1", "train.max_steps_per_epoch=2", "search.valid_batches=1",
            "search_strategy={population: 4, generations: 2, parents: 2}",
            "retrain.epochs=1", "retrain.max_steps_per_epoch=2"]  # fmt: skip
    assert main.main(args) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["measured_within_budget"]
    assert metrics[f"measured_{metric}"] <= target
    assert metrics[metric] <= target  # the table's (calibrated) prediction is within it too
    assert metrics[f"measured_{metric}"] == json.loads((run / "searched_arch.json").read_text())[f"measured_{metric}"]
    assert "lookup table: reused" in (run / "log.txt").read_text()  # the saved table's fingerprint matched


def test_a_skipped_layer_computes_nothing_in_the_standalone_network(proxyless, tiny_params, digits_info):
    """Measured latency is what runs: a skip is a pass-through, no identity / zero-multiply function remains."""
    choices = proxyless.choices(tiny_params, digits_info)
    skippable = [label for label, c in choices.items() if "skip" in c.values]
    assert skippable
    base = {label: c.values[0] for label, c in choices.items()}
    skipped = {**base, **{label: "skip" for label in skippable}}

    def functions(arch):
        x, y = forward_graph(proxyless.build_model(tiny_params, digits_info, arch), (1, 8, 8))
        found = []
        y.visit(lambda f: found.append((f.info.type_name, f.info.args)))
        return found

    full, lean = functions(base), functions(skipped)
    assert not [f for f in lean if f[0] == "Identity" or (f[0] == "MulScalar" and f[1].get("val") == 0)]
    per_block = (len(full) - len(lean)) / len(skippable)
    assert per_block > 0 and float(per_block).is_integer()  # every skipped block removed all of its functions
