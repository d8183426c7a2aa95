"""A free-form space written as seed 001 shows (a LayerChoice between two convs, an optional skip, a concat
of 2 of 3 inputs) is registered with no model or lookup table and searched end to end with uniform +
evolution and with differentiable training, then retrained; its table and standalone networks are derived."""

import json
from dataclasses import dataclass

import nnabla.functions as F
import numpy as np
import pytest

import main
from core.registries import SEARCH_SPACES
from hardware.counter import count_module
from search_space.layers import ABCModule, Conv2d, GlobalAvgPool, Linear
from search_space.mutables import InputChoice, LayerChoice
from search_space.searchable import Searchable
from search_space.space import register_space
from search_space.spec import DataInfo


@dataclass(frozen=True)
class SeedNetParams:
    """Channels of the convolutions."""

    channels: int = 8


class SeedNet(Searchable, ABCModule):
    """Seed 001's MNIST example, written with this toolkit's mutables."""

    Params = SeedNetParams

    def __init__(self, params: SeedNetParams, data: DataInfo):
        c = params.channels
        self.conv1 = LayerChoice([Conv2d(data.in_channels, c, 3), Conv2d(data.in_channels, c, 5)])  # 3x3 or 5x5
        self.conv2 = Conv2d(c, c, 3)
        self.conv3 = Conv2d(c, c, 1)
        self.skipcon = InputChoice(n_candidates=1, n_chosen=None)  # "one or none"
        self.merge = InputChoice(n_candidates=3, n_chosen=2, reduction="concat")
        self.head = LayerChoice({"k1": Conv2d(2 * c, c, 1), "k3": Conv2d(2 * c, c, 3)})
        self.pool = GlobalAvgPool()
        self.fc = Linear(c, data.num_classes)

    def call(self, x):
        x = F.relu(self.conv1(x))
        x0 = self.skipcon([x])
        y = self.conv3(F.relu(self.conv2(x)))
        if x0 is not None:
            y = y + x0
        m = self.merge([x, y, F.relu(y)])
        return self.fc(self.pool(F.relu(self.head(m))))


@pytest.fixture(scope="module")
def space():
    if "SeedNet" not in SEARCH_SPACES:
        register_space("SeedNet", SeedNet)
    return SEARCH_SPACES.get("SeedNet")


INFO = DataInfo(10, 1, 8)


def test_derived_table_and_standalone_networks(space):
    params = SeedNetParams()
    choices = space.choices(params, INFO)
    assert list(choices) == ["conv1", "skipcon", "merge", "head"] and choices.size() == 24
    table = space.build_lookup_table(params, INFO)
    rng = np.random.default_rng(0)
    for _ in range(6):
        arch = choices.sample(rng)
        model = space.build_model(params, INFO, arch)
        counted = count_module(model, (1, 8, 8))
        assert counted["flops"] == table.predict(arch, "flops") and counted["params"] == table.predict(arch, "params")
        names = list(model.get_parameters())
        assert sum("@conv1/@candidates" in n for n in names) == 1  # only the chosen conv1 exists
        assert not hasattr(model, "arch_parameters")
    # a 5x5 conv1 costs 25/9 of the 3x3 one: 8 output channels x 64 positions x k*k
    costs = table.info_table["flops"]["conv1"]
    assert costs == [8 * 64 * 9, 8 * 64 * 25]


TINY = [
    "agent.search_space_agent=SeedNet",
    "search_space={}",
    "hardware.target_hc=null",
    "train.epochs=2",
    "train.max_steps_per_epoch=3",
    "retrain.epochs=1",
    "retrain.max_steps_per_epoch=3",
    "search.valid_batches=1",
    "--quiet",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategies",
    [
        ["agent.training_strategy_agent=uniform", "agent.search_strategy_agent=evolution",
         "search_strategy={population: 4, generations: 2, parents: 2}"],
        ["agent.training_strategy_agent=differentiable", "agent.search_strategy_agent=differentiable",
         "search_strategy={}", "training_strategy={algorithm: darts}"],
    ],
    ids=["uniform_evolution", "differentiable"],
)  # fmt: skip
def test_searched_and_retrained_with_no_glue(space, tmp_path, strategies):
    args = ["-c", "configs/demo.yml", "--title", "seed", "--output-dir", str(tmp_path), *TINY, *strategies]
    assert main.main(args) == 0
    run = tmp_path / "seed"
    metrics = json.loads((run / "metrics.json").read_text())
    arch = space.choices(SeedNetParams(), INFO).validate(metrics["arch"])
    assert metrics["model_flops"] == metrics["flops"] and 0.0 < metrics["test_accuracy"] <= 1.0
    assert metrics["export"]["nnp_max_abs_diff"] <= 1e-4 and metrics["export"]["onnx_max_abs_diff"] <= 1e-4
    assert {"arch.png", "search.png", "pareto.png", "model.nnp", "model.onnx"} <= {p.name for p in run.iterdir()}
    assert arch["merge"] in {(0, 1), (0, 2), (1, 2)}
