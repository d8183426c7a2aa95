"""The ENAS micro and macro spaces (free-form): their decisions against hand counts, lookup tables equal to counts of
the derived standalone networks (also on the sparsest architectures), hand-computed FLOPs, pruned standalone
networks, input routing in a micro node, the skip sum of a macro layer, and a search -> retrain -> test run each."""

import json

import nnabla as nn
import numpy as np
import pytest

import main
from core.errors import ConfigError
from core.registries import SEARCH_SPACES
from hardware.counter import count_module
from search_space.choices import Subset
from search_space.enas import ENASMacroParams, ENASMacroSupernet, ENASMicroParams, ENASMicroSupernet
from search_space.enas.common import downsample_strides
from search_space.enas.macro import MACRO_OPS
from search_space.enas.micro import MICRO_OPS
from search_space.mutables import LayerChoice
from search_space.spec import DataInfo
from training_strategy.base import module_tree

INFO = DataInfo(10, 1, 8)
#: layers: normal (C=4, 8x8), reduce (8, 4x4), normal (8, 4x4), reduce (16, 2x2), normal (16, 2x2)
MICRO = ENASMicroParams(num_layers=3, num_nodes=2, out_channels=4)
#: layers 0-1 at 8x8, pool, layers 2-3 at 4x4, pool, layers 4-5 at 2x2; 4 channels throughout
MACRO = ENASMacroParams(num_layers=6, out_filters=4)
BN_SCALE = 1.0 / np.sqrt(1.0 + 1e-5)  # a fresh BatchNorm in inference mode (mean 0, variance 1)


@pytest.fixture(scope="module")
def micro():
    return SEARCH_SPACES.get("ENASMicro")


@pytest.fixture(scope="module")
def macro():
    return SEARCH_SPACES.get("ENASMacro")


@pytest.fixture(scope="module")
def micro_table(micro):
    return micro.build_lookup_table(MICRO, INFO)


@pytest.fixture(scope="module")
def macro_table(macro):
    return macro.build_lookup_table(MACRO, INFO)


def first_values(choices, **overrides):
    arch = {label: c.values[0] for label, c in choices.items()}
    arch.update(overrides)
    return arch


def variable(rng, shape):
    return nn.Variable.from_numpy_array(rng.normal(size=shape).astype(np.float32))


# ------------------------------------------------------------------------------------------------------ decisions


def test_micro_searches_one_normal_and_one_reduction_cell(micro):
    choices = micro.choices(MICRO, INFO)
    expected = [
        f"{kind}_node{j}_{what}{b}" for kind in ("normal", "reduce") for j in range(2) for b in range(2)
        for what in ("in", "op")
    ]  # fmt: skip
    assert list(choices) == expected
    assert choices["normal_node1_in0"] == Subset(3, 1) and choices["reduce_node0_in1"] == Subset(2, 1)
    assert list(choices["reduce_node1_op1"].values) == list(MICRO_OPS)
    # per cell type: node j has two branches of (2 + j) inputs x 5 operations
    per_type = (2 * 5) ** 2 * (3 * 5) ** 2
    assert choices.size() == per_type**2
    deeper = ENASMicroParams(num_layers=6, num_nodes=2, out_channels=4)
    assert micro.choices(deeper, INFO) == choices  # more cells, the same shared labels
    net = ENASMicroSupernet(MICRO, INFO)
    net.decisions()
    normal = [c for c in net.cells if not c.reduction]
    assert len(net.cells) == 5 and len(normal) == 3
    assert normal[0].nodes[1].branches[0].input.decision is normal[2].nodes[1].branches[0].input.decision


def test_macro_has_one_operation_and_one_skip_set_per_layer(macro):
    choices = macro.choices(MACRO, INFO)
    assert list(choices) == ["layer_0"] + [f"{kind}_{i}" for i in range(1, 6) for kind in ("layer", "skip")]
    assert choices["skip_3"] == Subset(3, None) and choices["skip_3"].values[0] == ()
    assert list(choices["layer_5"].values) == list(MACRO_OPS)
    assert choices.size() == 6**6 * 2 ** (1 + 2 + 3 + 4 + 5)  # any subset of the i earlier states at layer i


def test_downsampling_positions_follow_nni_and_respect_the_minimum_size():
    # NNI's macro pools after layers [d - 1, 2d - 1], d = num_layers // 3: 3 and 7 for 12 layers
    default = ENASMacroSupernet(ENASMacroParams(out_filters=2), DataInfo(10, 1, 32))
    assert [i for i, s in enumerate(default.strides) if s == 2] == [3, 7]
    assert ENASMacroSupernet(MACRO, INFO).strides == (1, 2, 1, 2, 1, 1)
    assert ENASMacroSupernet(ENASMacroParams(num_layers=6, out_filters=2, min_feature_size=4), INFO).strides == (
        1, 2, 1, 1, 1, 1,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="pool_layers"):
        ENASMacroSupernet(ENASMacroParams(num_layers=4, out_filters=2, pool_layers=(4,)), INFO)
    # micro: reductions at [d, 2d + 1] of num_layers + 2 layers; 8 -> 4 -> 2 at min size 2, only 8 -> 4 at 4
    assert downsample_strides(8, (2, 5), 8, 2) == [1, 1, 2, 1, 1, 2, 1, 1]
    assert downsample_strides(8, (2, 5), 8, 4) == [1, 1, 2, 1, 1, 1, 1, 1]


# --------------------------------------------------------------------------------------------------------- costs


@pytest.mark.parametrize("name", ["micro", "macro"])
def test_table_equals_counts_of_standalone_networks(name, request):
    space, table = request.getfixturevalue(name), request.getfixturevalue(f"{name}_table")
    params = MICRO if name == "micro" else MACRO
    choices = table.choices
    rng = np.random.default_rng(0)
    archs = [choices.sample(rng) for _ in range(3)]
    if name == "macro":  # the sparsest and the densest skip sets (older states are read only through skips)
        archs.append(first_values(choices))
        archs.append({k: (choices[k].values[-1] if k.startswith("skip") else v) for k, v in archs[0].items()})
    cheapest = {label: min(row, key=row.get) for label, row in table.cost_model("flops").table.items()}
    for arch in archs + [first_values(choices, **cheapest)]:
        counted = count_module(space.build_model(params, INFO, arch), (1, 8, 8))
        assert counted["flops"] == table.predict(arch, "flops")
        assert counted["params"] == table.predict(arch, "params")
    assert table.predict(first_values(choices, **cheapest), "flops") == table.cost_model("flops").min_cost()


def test_micro_candidate_flops_by_hand(micro_table):
    # a normal-cell branch op runs in the three normal cells: C=4 at 8x8, C=8 at 4x4, C=16 at 2x2
    normal_cells = ((4, 64), (8, 16), (16, 4))
    row = dict(zip(micro_table.choices["normal_node0_op0"].values, micro_table.info_table["flops"]["normal_node0_op0"]))
    for k in (3, 5):  # depthwise kxk + pointwise 1x1, per output position
        assert row[f"sep_conv_{k}x{k}"] == sum(hw * c * (k * k + c) for c, hw in normal_cells)
    assert row["avg_pool_3x3"] == row["max_pool_3x3"] == row["identity"] == 0
    assert row["sep_conv_3x3"] == 64 * 4 * 13 + 16 * 8 * 17 + 4 * 16 * 25 == 7104
    # reduction cells: C=8 at 4x4, C=16 at 2x2
    reduce = dict(
        zip(micro_table.choices["reduce_node1_op0"].values, micro_table.info_table["flops"]["reduce_node1_op0"])
    )
    assert reduce["sep_conv_5x5"] == 16 * 8 * (25 + 8) + 4 * 16 * (25 + 16)
    assert all(cost == 0 for cost in micro_table.info_table["flops"]["normal_node1_in0"])  # choosing is free


def test_macro_candidate_flops_by_hand(macro_table):
    flops, params = macro_table.info_table["flops"], macro_table.info_table["params"]
    values = list(MACRO_OPS)
    c = 4
    # conv_3x3 = 1x1 StdConv + 3x3 conv, at 8x8 (layer 0), 4x4 (layer 2), 2x2 (layer 4)
    for label, hw in (("layer_0", 64), ("layer_2", 16), ("layer_4", 4)):
        assert flops[label][values.index("conv_3x3")] == hw * c * c * (1 + 9)
    assert flops["layer_4"][values.index("sep_conv_5x5")] == 4 * (c * c + c * 25 + c * c) == 528
    assert flops["layer_1"][values.index("avg_pool_3x3")] == 64 * c * c  # the pooling branch's 1x1 conv only
    assert params["layer_3"][values.index("conv_5x5")] == c * c + c * c * 25  # BNs without affine parameters
    assert all(cost == 0 for cost in flops["skip_5"])  # skip connections (and the pooling of older states) are free


# ------------------------------------------------------------------------------------------- standalone networks


def test_micro_standalone_network_keeps_only_the_chosen_operations(micro):
    choices = micro.choices(MICRO, INFO)
    arch = first_values(choices, normal_node0_op0="sep_conv_5x5", normal_node1_op1="identity")
    net = micro.build_model(MICRO, INFO, arch)
    ops = [m for m in module_tree(net) if isinstance(m, LayerChoice)]
    assert len(ops) == 5 * 2 * 2 and all(len(op.candidates) == 1 for op in ops)
    params = net.get_parameters()
    branch = "@net/@cells/@0/@nodes/@0/@branches/@0/@op/@candidates/@0"
    assert params[f"{branch}/@depthwise/W"].shape == (4, 5, 5)  # the chosen 5x5 (depthwise), in the first normal cell
    assert not [n for n in params if "@candidates/@1/" in n]
    assert not [n for n in params if n.startswith("@net/@cells/@0/@nodes/@1/@branches/@1/")]  # identity: nothing


def test_macro_standalone_network_keeps_only_the_chosen_operations(macro):
    choices = macro.choices(MACRO, INFO)
    arch = first_values(choices, layer_0="sep_conv_5x5", layer_3="max_pool_3x3", skip_3=(0, 2))
    net = macro.build_model(MACRO, INFO, arch)
    params = net.get_parameters()
    assert params["@net/@layers/@0/@op/@candidates/@0/@conv/@depthwise/W"].shape == (4, 5, 5)
    assert "@net/@layers/@3/@op/@candidates/@0/@preproc/@body/@conv/W" in params  # max pool: its 1x1 conv only
    assert not [n for n in params if "@candidates/@1/" in n]
    trained = [n for n in net.get_parameters(grad_only=True) if n.startswith("@net/@layers/@3/")]
    assert trained == ["@net/@layers/@3/@op/@candidates/@0/@preproc/@body/@conv/W"]  # BNs have no affine weights


# ------------------------------------------------------------------------------------------------------ routing


def test_micro_node_takes_the_chosen_state():
    net = ENASMicroSupernet(MICRO, INFO)
    choices = net.choices()
    node = net.cells[0].nodes[1]  # node 1 of the first normal cell: inputs s0, s1, node 0 (4 channels, 8x8)
    node.training = False
    rng = np.random.default_rng(0)
    states = [variable(rng, (2, 4, 8, 8)) for _ in range(3)]
    both_identity = {"normal_node1_op0": "identity", "normal_node1_op1": "identity"}
    net.set_active(first_values(choices, normal_node1_in0=(2,), normal_node1_in1=(2,), **both_identity))
    y = node(states)
    y.forward()
    np.testing.assert_array_equal(y.d, 2 * states[2].d)
    net.set_active(first_values(choices, normal_node1_in0=(0,), normal_node1_in1=(2,), **both_identity))
    y = node(states)
    y.forward()
    np.testing.assert_allclose(y.d, states[0].d + states[2].d, rtol=1e-6)
    # with an operation: the output follows the chosen state only
    net.set_active(first_values(choices, normal_node1_in0=(2,), normal_node1_in1=(2,), normal_node1_op1="sep_conv_3x3"))
    y = node(states)
    y.forward()
    before = y.d.copy()
    states[0].d, states[1].d = states[0].d + 1.0, states[1].d * 3.0
    y.forward()
    np.testing.assert_array_equal(y.d, before)
    states[2].d = states[2].d + 1.0
    y.forward()
    assert np.abs(y.d - before).max() > 0.1


def test_macro_skip_sum_is_the_sum_of_the_chosen_states():
    net = ENASMacroSupernet(MACRO, INFO)
    choices = net.choices()
    layer = net.layers[3]  # skip_3 chooses among the stem, layer 0 and layer 1 outputs
    layer.training = False
    rng = np.random.default_rng(1)
    states = [variable(rng, (2, 4, 4, 4)) for _ in range(4)]
    net.set_active(first_values(choices, layer_3="max_pool_3x3", skip_3=(0, 2)))
    skip = layer.skip(states[:-1])
    op = layer.op(states[-1])
    y = layer(states)
    for v in (skip, op, y):
        v.forward()
    np.testing.assert_allclose(skip.d, states[0].d + states[2].d, rtol=1e-6)
    np.testing.assert_allclose(y.d, (op.d + states[0].d + states[2].d) * BN_SCALE, rtol=1e-5, atol=1e-6)
    net.set_active(first_values(choices, layer_3="max_pool_3x3", skip_3=()))
    assert layer.skip(states[:-1]) is None
    y = layer(states)
    y.forward()
    np.testing.assert_allclose(y.d, op.d * BN_SCALE, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- end to end

#: a few steps of every stage (search -> retrain -> test -> export), the configs' other settings kept
TINY = {
    "train.epochs": 1,
    "train.max_steps_per_epoch": 3,
    "retrain.epochs": 1,
    "retrain.max_steps_per_epoch": 3,
    "search.valid_batches": 1,
    "search.bn_recalibration_batches": 1,
    "search_strategy": "{population: 4, generations: 2, parents: 2}",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, space_params",
    [("micro", {"num_layers": 1, "num_nodes": 2, "out_channels": 4}), ("macro", {"num_layers": 3, "out_filters": 4})],
)
def test_searched_retrained_and_tested_under_a_budget(name, space_params, tmp_path):
    space = SEARCH_SPACES.get(f"ENAS{name.capitalize()}")
    params = space.Params(**space_params)
    model = space.build_lookup_table(params, INFO, ("flops",)).cost_model("flops")
    target = (model.min_cost() + model.max_cost()) / 2
    config = f"configs/enas_{name}_uniform_evolution.yml"
    args = ["-c", config, "--title", name, "--output-dir", str(tmp_path), f"search_space={json.dumps(space_params)}",
            f"hardware.target_hc={target}", *(f"{k}={v}" for k, v in TINY.items()), "--quiet"]  # fmt: skip
    assert main.main(args) == 0
    run = tmp_path / name
    metrics = json.loads((run / "metrics.json").read_text())
    arch = space.choices(params, INFO).validate(metrics["arch"])
    assert metrics["search_space"] == f"ENAS{name.capitalize()}" and metrics["evaluations"] >= 4
    assert metrics["model_flops"] == metrics["flops"] <= target and metrics["target_hc"] == target
    assert count_module(space.build_model(params, INFO, arch), (1, 8, 8))["flops"] == metrics["flops"]
    assert 0.0 < metrics["test_accuracy"] <= 1.0
    assert metrics["export"]["nnp_max_abs_diff"] <= 1e-4 and metrics["export"]["onnx_max_abs_diff"] <= 1e-4
    assert {"arch.png", "search.png", "pareto.png", "model.nnp", "model.onnx"} <= {p.name for p in run.iterdir()}
