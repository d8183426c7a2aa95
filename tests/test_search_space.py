"""Search spaces: contract tests over every registered space, lookup table vs the Model graph, hand counts."""

import json

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from core.errors import ArchitectureError
from core.registries import BLOCKS, SEARCH_SPACES
from hardware.counter import count_graph, count_module
from search_space.blocks.builder import build_block
from search_space.choices import Categorical, SearchSpaceChoices, decode_arch, encode_arch
from search_space.spec import DataInfo

SIZES = [DataInfo(10, 1, 8), DataInfo(10, 1, 16), DataInfo(100, 3, 32)]


def small_params(space):
    """Each space's defaults, narrowed where the space offers the ProxylessNAS knobs."""
    small = {
        "DARTS": {"init_channels": 4, "layers": 3, "nodes": 2},
        "ENASMicro": {"num_layers": 3, "num_nodes": 2, "out_channels": 4},
        "ENASMacro": {"num_layers": 6, "out_filters": 4},
        "SPOS": {"first_channels": 8, "stages": ((16, 2, 2), (32, 2, 2)), "last_channels": 32},
        "SGNAS": {
            "first_channels": 8,
            "first_mb_channels": 8,
            "stages": ((8, 2, 1), (16, 2, 2)),
            "expansion": 2,
            "last_channels": 32,
        },
        "MobileFaceNet": {"first_channels": 8, "stages": ((8, 2, 2), (16, 2, 1)), "last_channels": 32, "embedding": 16},
    }
    if space.name in small:
        return space.Params(**small[space.name])
    p = space.Params()
    if hasattr(p, "stages"):
        p = space.Params(first_channels=8, first_mb_channels=8, stages=((8, 2, 1), (16, 2, 2)), last_channels=32)
    return p


@pytest.mark.parametrize("name", SEARCH_SPACES.names())
@pytest.mark.parametrize("data", SIZES, ids=lambda d: f"{d.in_channels}x{d.input_size}")
def test_space_contract(name, data):
    space = SEARCH_SPACES.get(name)
    params = small_params(space)
    supernet = space.build_supernet(params, data)
    choices = supernet.choices()
    assert choices == space.choices(params, data)
    assert SearchSpaceChoices.from_dict(json.loads(json.dumps(choices.to_dict()))) == choices
    rng = np.random.default_rng(0)
    arch = choices.sample(rng)
    assert choices.validate(decode_arch(encode_arch(arch))) == arch  # JSON has lists where subsets have tuples
    supernet.set_active(arch)
    assert supernet.active_arch() == arch
    x = nn.Variable.from_numpy_array(rng.standard_normal((2, data.in_channels, data.input_size, data.input_size)))
    y = supernet(x)
    y.forward()
    assert y.shape == (2, data.num_classes) and np.isfinite(y.d).all()
    model = space.build_model(params, data, arch)
    model.training = False
    supernet.training = False
    ym = model(x)
    ym.forward()
    assert ym.shape == (2, data.num_classes)
    # weights: every supernet parameter belongs to exactly one weight group
    groups = supernet.weight_groups()
    flat = [k for g in groups.values() for k in g]
    assert sorted(flat) == sorted(supernet.get_parameters(grad_only=True))


@pytest.mark.parametrize("name", SEARCH_SPACES.names())
def test_lookup_table_equals_model_graph_counts(name):
    """Table (per-candidate graphs) + base == count of the whole static Model graph, for 6 random archs."""
    space = SEARCH_SPACES.get(name)
    data = DataInfo(10, 3, 16)
    params = small_params(space)
    lut = space.build_lookup_table(params, data)
    rng = np.random.default_rng(1)
    choices = space.choices(params, data)
    for _ in range(6):
        arch = choices.sample(rng)
        model = space.build_model(params, data, arch)
        graph = count_module(model, (3, 16, 16))
        n_params = sum(v.size for v in model.get_parameters(grad_only=True).values())
        assert lut.predict(arch, "flops") == graph["flops"]
        assert lut.predict(arch, "params") == graph["params"] == n_params
    batch = [choices.sample(rng) for _ in range(5)]
    np.testing.assert_array_equal(lut.predict_batch(batch, "flops"), [lut.predict(a, "flops") for a in batch])


def test_lookup_table_save_load(tmp_path, proxyless, tiny_params, digits_info):
    lut = proxyless.build_lookup_table(tiny_params, digits_info)
    path = str(tmp_path / "lut.json")
    lut.save(path)
    saved = json.loads(open(path).read())
    again = proxyless.table_from_dict(saved, tiny_params, digits_info)
    arch = proxyless.choices(tiny_params, digits_info).sample(np.random.default_rng(0))
    assert again.predict(arch, "flops") == lut.predict(arch, "flops")
    other = proxyless.Params(stages=((8, 1, 1),), first_channels=8, first_mb_channels=8, last_channels=32)
    with pytest.raises(ArchitectureError, match="different search space"):
        proxyless.table_from_dict(saved, other, digits_info)


def test_flops_hand_counts():
    """Depthwise and grouped convolutions are not divided by groups twice; affine counts in x out."""
    x = nn.Variable((1, 32, 8, 8))
    w_dw = nn.Variable((32, 1, 3, 3), need_grad=True)
    y = F.convolution(x, w_dw, pad=(1, 1), group=32)
    assert count_graph(y) == {"flops": 8 * 8 * 32 * 9, "params": 32 * 9}
    w_g = nn.Variable((16, 8, 3, 3), need_grad=True)
    y = F.convolution(x, w_g, pad=(1, 1), stride=(2, 2), group=4)
    assert count_graph(y)["flops"] == 4 * 4 * 16 * 8 * 9
    w_fc = nn.Variable((32 * 8 * 8, 10), need_grad=True)
    b_fc = nn.Variable((10,), need_grad=True)
    y = F.affine(x, w_fc, b_fc)
    assert count_graph(y) == {"flops": 2048 * 10, "params": 2048 * 10 + 10}


def test_inverted_residual_hand_count():
    # expand 8->24 (1x1, 4x4): 16*24*8; dw 3x3: 16*24*9; project 24->8: 16*8*24
    block = build_block("mobile", 8, 8, 1, expansion=3, kernel=3)
    counts = count_module(block, (8, 4, 4))
    assert counts["flops"] == 16 * 24 * 8 + 16 * 24 * 9 + 16 * 8 * 24
    bn = 2 * (24 + 24 + 8)
    assert counts["params"] == 8 * 24 + 24 * 9 + 24 * 8 + bn


@pytest.mark.parametrize("block_type", BLOCKS.names())
def test_block_contract(block_type):
    shape = {"gap": (8, 4, 4), "linear": (8,)}.get(block_type, (8, 4, 4))
    block = build_block(block_type, 8, 8, 1)
    x = nn.Variable.from_numpy_array(np.random.default_rng(0).standard_normal((2,) + shape))
    y = block(x)
    if y.parent is not None:  # skip returns its input unchanged
        y.forward()
    assert np.isfinite(y.d).all() and y.shape[0] == 2


def test_skip_refuses_shape_change():
    with pytest.raises(ArchitectureError, match="needs in_channels == out_channels"):
        build_block("skip", 8, 16, 1)


def test_choices_validation_names_the_label():
    choices = SearchSpaceChoices({"a": Categorical(("x", "y")), "b": Categorical((1, 2, 3))})
    with pytest.raises(ArchitectureError, match="label 'b': invalid value 4"):
        choices.validate({"a": "x", "b": 4})
    with pytest.raises(ArchitectureError, match="unknown label 'c'"):
        choices.validate({"a": "x", "b": 1, "c": 0})
    with pytest.raises(ArchitectureError, match="label 'b' has no value"):
        choices.validate({"a": "x"})
    assert choices.from_indices(choices.to_indices({"b": 3, "a": "y"})) == {"a": "y", "b": 3}
    assert choices.size() == 6


def test_proxyless_strides_adapt_to_input(proxyless):
    params = proxyless.Params()  # full CIFAR backbone
    for size, final in ((8, 4), (16, 4), (32, 4)):
        macro, _ = proxyless.model_cfg(params, DataInfo(10, 3, size))
        reductions = sum(1 for b in macro.first if b.stride == 2) + sum(1 for s in macro.search if s.stride == 2)
        assert size // 2**reductions == final
    # skip only where shapes allow: the first layer of a stage changing width has no skip
    macro, micro = proxyless.model_cfg(params, DataInfo(10, 3, 32))
    choices = proxyless.choices(params, DataInfo(10, 3, 32))
    assert "skip" not in choices["layer_0"].values and "skip" in choices["layer_1"].values
    assert len(choices["layer_1"]) == 7
