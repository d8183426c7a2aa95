"""FBNet space: the paper's 22-layer macro, the candidate grid, strides on small inputs, counts by hand."""

import nnabla as nn
import numpy as np
import pytest

from core.config import load_config
from core.errors import ConfigError
from core.registries import SEARCH_SPACES
from hardware.counter import count_module
from search_space.spec import DataInfo

NAMES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


@pytest.fixture(scope="module")
def fbnet():
    return SEARCH_SPACES.get("FBNet")


@pytest.fixture(scope="module")
def small(fbnet):
    """A narrow 5-layer FBNet: 16x1 (keeps the shape), 24x2 s2 (widens, then keeps), 32x2."""
    return fbnet.Params(first_stride=1, stages=((16, 1, 1), (24, 2, 2), (32, 2, 1)), last_channels=64)


def test_default_space_is_fbnets_22_layers(fbnet):
    params = fbnet.Params()
    data = DataInfo(100, 3, 32)
    macro, micro = fbnet.model_cfg(params, data)
    assert tuple(c.name for c in micro) == NAMES
    assert len(macro.search) == 22
    assert [b.block_type for b in macro.first] == ["conv_bn_act"] and macro.first[0].out_channels == 16
    assert [b.block_type for b in macro.last] == ["conv_bn_act", "gap", "linear"]
    assert macro.last[0].out_channels == 1984 and macro.search[-1].out_channels == 352
    widths = [layer.out_channels for layer in macro.search]
    assert widths == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    # a layer that changes the width (the first of every stage after the 16-channel one: 6 of them) has the
    # 8 blocks; the other 16 (the 16-channel layer and 3 per 4-layer stage) add skip
    changes = 6
    keeps = 1 + 3 * 5
    assert changes + keeps == 22
    choices = fbnet.choices(params, data)
    assert sorted(len(choices[label]) for label in choices.labels) == [8] * changes + [9] * keeps
    assert choices.size() == 9**keeps * 8**changes == 9**16 * 8**6


@pytest.mark.parametrize("size, strides, final", [(8, 1, 4), (32, 3, 4), (224, 5, 7)])
def test_strides_are_dropped_below_min_feature_size(fbnet, size, strides, final):
    """224x224 keeps all five stride-2 steps of the paper; small inputs stop at 4x4."""
    macro, _ = fbnet.model_cfg(fbnet.Params(), DataInfo(10, 3, size))
    halvings = sum(b.stride == 2 for b in macro.first) + sum(layer.stride == 2 for layer in macro.search)
    assert halvings == strides and size // 2**strides == final


def test_skip_only_where_the_shape_is_kept(fbnet, small):
    for data in (DataInfo(10, 1, 8), DataInfo(100, 3, 32)):
        macro, _ = fbnet.model_cfg(small, data)
        choices = fbnet.choices(small, data)
        for layer in macro.search:
            values = choices[layer.label].values
            keeps = layer.in_channels == layer.out_channels and layer.stride == 1
            assert values == (NAMES if keeps else NAMES[:-1])
            assert len(values) in (8, 9)


@pytest.mark.parametrize("data", [DataInfo(10, 1, 8), DataInfo(100, 3, 32)], ids=["8x8", "32x32"])
def test_space_builds_and_runs(fbnet, small, data):
    supernet = fbnet.build_supernet(small, data)
    choices = supernet.choices()
    assert choices == fbnet.choices(small, data) and len(choices) == 5
    rng = np.random.default_rng(0)
    x = nn.Variable.from_numpy_array(rng.standard_normal((2, data.in_channels, data.input_size, data.input_size)))
    for arch in (choices.sample(rng), {label: "k5_e1_g2" for label in choices.labels}):
        supernet.set_active(arch)
        y = supernet(x)
        y.forward()
        assert y.shape == (2, data.num_classes) and np.isfinite(y.d).all()
        model = fbnet.build_model(small, data, arch)
        ym = model(x)
        ym.forward()
        assert ym.shape == (2, data.num_classes) and np.isfinite(ym.d).all()


def test_lookup_table_equals_the_model_graph(fbnet, small):
    data = DataInfo(10, 3, 16)
    lut = fbnet.build_lookup_table(small, data)
    choices = fbnet.choices(small, data)
    rng = np.random.default_rng(3)
    archs = [choices.sample(rng) for _ in range(4)] + [{label: "k3_e1_g2" for label in choices.labels}]
    for arch in archs:
        model = fbnet.build_model(small, data, arch)
        graph = count_module(model, (3, 16, 16))
        n_params = sum(v.size for v in model.get_parameters(grad_only=True).values())
        assert lut.predict(arch, "flops") == graph["flops"]
        assert lut.predict(arch, "params") == graph["params"] == n_params


def test_grouped_candidates_hand_count(fbnet, small):
    """Parameters (conv weights, no biases; BN scale + shift) of one layer's candidates, counted by hand.

    ``k3_e1_g2`` = grouped 1x1 expand (C_in -> C_in, 2 groups) + BN, depthwise 3x3 + BN, grouped 1x1 project
    + BN: each grouped 1x1 holds half the weights of an ungrouped one. ``k3_e1`` has no expand convolution.
    """
    lut = fbnet.build_lookup_table(small, DataInfo(10, 1, 8))
    row = dict(zip(fbnet.choices(small, DataInfo(10, 1, 8))["layer_1"].values, lut.info_table["params"]["layer_1"]))
    # layer_1: 16 -> 24, stride 2
    dw, bn_in, bn_out = 16 * 9, 2 * 16, 2 * 24
    plain = dw + bn_in + 16 * 24 + bn_out
    grouped = 16 * 16 // 2 + bn_in + dw + bn_in + 16 * 24 // 2 + bn_out
    assert (row["k3_e1"], row["k3_e1_g2"]) == (plain, grouped) == (608, 576)
    assert row["k3_e1_g2"] < row["k3_e1"]
    # the 1x1 weights: 128 + 192 grouped against 256 + 384 for the same two convolutions ungrouped
    assert grouped - (dw + 2 * bn_in + bn_out) == (16 * 16 + 16 * 24) // 2
    e3 = 16 * 48 + 2 * 48 + 48 * 9 + 2 * 48 + 48 * 24 + bn_out
    assert row["k3_e3"] == e3 and row["k5_e1_g2"] - row["k3_e1_g2"] == 16 * (25 - 9)
    assert row["k3_e1_g2"] < row["k3_e3"] < row["k3_e6"]


def test_groups_must_divide_the_channels(fbnet):
    with pytest.raises(ConfigError, match="search_space.groups: k3_e1_g3 needs group 3"):
        fbnet.model_cfg(fbnet.Params(groups=(3,)), DataInfo(10, 1, 8))
    macro, micro = fbnet.model_cfg(fbnet.Params(groups=(2, 4), grouped_expansions=(1, 3)), DataInfo(10, 1, 8))
    names = [c.name for c in micro]
    assert names[:6] == ["k3_e1", "k3_e1_g2", "k3_e1_g4", "k3_e3", "k3_e3_g2", "k3_e3_g4"]


def test_width_mult_and_optional_fixed_block(fbnet):
    macro, _ = fbnet.model_cfg(fbnet.Params(width_mult=0.5), DataInfo(10, 3, 32))
    assert macro.first[0].out_channels == 8 and macro.last[0].out_channels == 992
    assert [layer.out_channels for layer in macro.search][-1] == 176
    macro, _ = fbnet.model_cfg(fbnet.Params(first_mb_channels=16), DataInfo(10, 3, 32))
    assert [b.block_type for b in macro.first] == ["conv_bn_act", "mobile"] and len(macro.search) == 22


@pytest.mark.parametrize("path", ["configs/fbnet_uniform_evolution.yml", "configs/fbnet_differentiable.yml"])
def test_configs_load(path, fbnet):
    cfg = load_config(path).validate()
    assert cfg.agent.search_space_agent == "FBNet" and isinstance(cfg.search_space, fbnet.Params)
