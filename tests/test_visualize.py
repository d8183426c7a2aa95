"""Network summary, Pareto front, search curves and the three run pictures."""

import dataclasses
import json
import math
import os

import matplotlib.image
import numpy as np
import pytest

from core.pareto import pareto_front
from core.visualize import human, plot_arch, plot_pareto, plot_search, search_curves
from hardware.counter import count_module
from hardware.summary import network_summary
from search_space.base_supernet import Superlayer
from search_space.blocks.builder import build_block
from search_space.layers import ModuleList

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_lut(proxyless, tiny_params, digits_info):
    return proxyless.build_lookup_table(tiny_params, digits_info)


def archs(proxyless, tiny_params, digits_info, n=3):
    rng = np.random.default_rng(0)
    return [proxyless.choices(tiny_params, digits_info).sample(rng) for _ in range(n)]


def check_totals(space, params, data, arch, lut):
    rows = network_summary(space, params, data, arch)
    model = count_module(space.build_model(params, data, arch), (data.in_channels, data.input_size, data.input_size))
    for metric in ("flops", "params"):
        total = sum(r[metric] for r in rows)
        assert total == model[metric] == lut.predict(arch, metric)
    return rows


def test_network_summary_rows(proxyless, tiny_params, digits_info, tiny_lut):
    macro_cfg, _ = proxyless.model_cfg(tiny_params, digits_info)
    for arch in archs(proxyless, tiny_params, digits_info):
        rows = check_totals(proxyless, tiny_params, digits_info, arch, tiny_lut)
        assert json.loads(json.dumps(rows, allow_nan=False)) == rows
        stages = [r["stage"] for r in rows]
        assert stages == ["first"] * len(macro_cfg.first) + ["search"] * len(macro_cfg.search) + ["last"] * len(
            macro_cfg.last
        )
        search = [r for r in rows if r["stage"] == "search"]
        assert [r["label"] for r in search] == [layer.label for layer in macro_cfg.search]
        assert [r["name"] for r in search] == [arch[layer.label] for layer in macro_cfg.search]
        assert [r["name"] for r in rows if r["stage"] == "last"] == [b.block_type for b in macro_cfg.last]
        assert rows[0]["in_channels"] == digits_info.in_channels
        assert rows[-1]["out_channels"] == digits_info.num_classes
        for prev, row in zip(rows, rows[1:]):
            assert row["in_channels"] == prev["out_channels"]
        assert rows[0]["input_size"] == digits_info.input_size
        assert rows[-1]["input_size"] is None  # the classifier reads a pooled vector


class WideSuperlayer(Superlayer):
    """A custom superlayer: every candidate is followed by an extra 1x1 convolution."""

    def _construct_candidates(self, layer, candidates):
        extra = [build_block("conv_bn_act", layer.out_channels, layer.out_channels, 1, kernel=1) for _ in candidates]
        return [ModuleList([c.build(layer), e]) for c, e in zip(candidates, extra)]


def test_network_summary_counts_custom_superlayer(proxyless, tiny_params, digits_info, tiny_lut):
    supernet = type("WideSupernet", (proxyless.supernet,), {"superlayer_builder": WideSuperlayer})
    wide = dataclasses.replace(proxyless, name="Wide", supernet=supernet)
    lut = wide.build_lookup_table(tiny_params, digits_info)
    arch = archs(proxyless, tiny_params, digits_info, 1)[0]
    rows = check_totals(wide, tiny_params, digits_info, arch, lut)
    assert sum(r["flops"] for r in rows) > tiny_lut.predict(arch, "flops")


def test_pareto_front() -> None:
    points = [
        (0.90, 100.0),  # 0 front
        (0.80, 50.0),  # 1 front
        (0.85, 120.0),  # 2 dominated by 0
        (0.90, 100.0),  # 3 duplicate of 0: kept
        (0.95, 300.0),  # 4 front: most accurate
        (0.95, 400.0),  # 5 same objective, dearer: dominated by 4
        (0.70, 50.0),  # 6 same cost as 1, worse: dominated
        (math.nan, 1.0),  # 7 NaN: never on the front
        (0.60, 10.0),  # 8 front: cheapest
        (0.60, 20.0),  # 9 dominated by 8
    ]
    assert pareto_front(points) == [8, 1, 0, 3, 4]
    assert pareto_front([]) == []
    assert pareto_front([(0.5, 1.0)]) == [0]
    assert pareto_front([(-math.inf, 2.0), (-math.inf, 1.0)]) == [1]


def history(gens, values, costs=None):
    costs = costs or [1000.0 * (i + 1) for i in range(len(values))]
    return [
        {"arch": {"l0": i}, "metrics": {"accuracy": v, "flops": c}, "cost": c, "generation": g}
        for i, (g, v, c) in enumerate(zip(gens, values, costs))
    ]


def test_search_curves_evolution() -> None:
    h = history([0, 0, 0, 1, 1, 2, 2], [0.5, 0.7, 0.6, 0.65, 0.55, 0.9, math.nan])
    curves = search_curves(h, "accuracy")
    assert curves["by"] == "generation" and curves["step"] == [0, 1, 2]
    assert curves["series"]["best"] == [0.7, 0.7, 0.9]
    assert curves["series"]["mean"] == pytest.approx([0.6, 0.6, 0.9])
    assert curves["points"]["step"] == [0, 0, 0, 1, 1, 2, 2]


def test_search_curves_random() -> None:
    curves = search_curves(history([0, 0, 0, 0], [math.nan, 0.4, 0.3, 0.8]), "accuracy")
    assert curves["by"] == "evaluation" and curves["step"] == [1, 2, 3, 4]
    assert curves["series"]["objective"][1:] == [0.4, 0.3, 0.8]
    assert math.isnan(curves["series"]["best"][0]) and curves["series"]["best"][1:] == [0.4, 0.4, 0.8]
    assert search_curves([], "accuracy")["step"] == []


def test_human() -> None:
    assert [human(v) for v in (512, 35_200, 1_157_248, 2e6, 0)] == ["512", "35k", "1.2M", "2M", "0"]
    assert human(1_157_248, 3) == "1.16M"


def assert_png(path, min_side=200):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side


def test_plots_write_png(tmp_path, proxyless, tiny_params, digits_info) -> None:
    arch = archs(proxyless, tiny_params, digits_info, 1)[0]
    rows = network_summary(proxyless, tiny_params, digits_info, arch)
    evo = history([0, 0, 0, 1, 1, 2], [0.5, 0.7, 0.6, 0.65, 0.75, 0.9], [3e5, 2e5, 1e5, 4e5, 2.5e5, 5e5])
    rnd = history([0] * 5, [0.5, 0.7, 0.6, 0.65, 0.75])
    plot_arch(rows, str(tmp_path / "arch.png"), title="tiny", candidates=["MB3_K3", "skip"])
    plot_search(evo, str(tmp_path / "search_evo.png"))
    plot_search(rnd, str(tmp_path / "search_rnd.png"))
    plot_pareto(evo, str(tmp_path / "pareto_evo.png"), target=4.5e5, chosen=evo[4]["arch"])
    plot_pareto([{**e, "cost": None} for e in rnd], str(tmp_path / "pareto_rnd.png"), metric="flops")
    plot_search([], str(tmp_path / "search_empty.png"))
    plot_pareto([], str(tmp_path / "pareto_empty.png"))
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(
        ["arch.png", "search_evo.png", "search_rnd.png", "pareto_evo.png", "pareto_rnd.png"]
        + ["search_empty.png", "pareto_empty.png"]
    )  # no temporary file left behind
    for name in names:
        assert_png(str(tmp_path / name))
