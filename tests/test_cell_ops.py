"""DARTS / ENAS cell operations and FBNet's grouped inverted residual: shapes, hand counts, graphs, training."""

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np
import pytest
from nnabla.core.module import Module

from core.errors import ArchitectureError
from core.export import export_model, verify_export
from hardware.counter import count_graph, count_module
from search_space.blocks.builder import block_allows, build_block
from search_space.blocks.mobile import channel_shuffle
from search_space.layers import BatchNorm2d, Conv2d

P1, P2 = 8 * 8, 4 * 4  # output pixels of an 8x8 input at stride 1 and stride 2


def _both(counts):
    """``{stride: counts(output pixels)}`` for strides 1 and 2."""
    return {1: counts(P1), 2: counts(P2)}


# (block, kwargs) -> (in, out, {stride: (MACs, trainable params)}) on an 8x8 input; ``p`` = output pixels.
# BatchNorm is not a MAC (counter convention) and has 2*C trainable params only when affine; pooling is free.
HAND = {
    ("max_pool_3x3", ()): (8, 8, _both(lambda p: (0, 0))),  # BN without affine params
    ("avg_pool_3x3", ()): (8, 8, _both(lambda p: (0, 0))),
    ("avg_pool_3x3", (("affine", True),)): (8, 8, _both(lambda p: (0, 2 * 8))),
    # identity; at stride 2 factorized_reduce: two 1x1 8->4 convs + BN(8)
    ("skip_connect", ()): (8, 8, {1: (0, 0), 2: (2 * P2 * 4 * 8, 2 * 4 * 8 + 2 * 8)}),
    ("zero", ()): (4, 8, _both(lambda p: (0, 0))),
    # [ReLU, dw 4xkxk (stride), pw 4->4, BN(4)] then [ReLU, dw 4xkxk, pw 4->8, BN(8)]
    ("sep_conv_3x3", ()): (4, 8, _both(lambda p: (p * (36 + 16) + p * (36 + 32), (36 + 16 + 8) + (36 + 32 + 16)))),
    ("sep_conv_5x5", ()): (4, 8, _both(lambda p: (p * (100 + 16) + p * (100 + 32), (100 + 16 + 8) + (100 + 32 + 16)))),
    # ReLU, dw 4xkxk dilation 2, pw 4->8, BN(8): dilation does not change the MACs
    ("dil_conv_3x3", ()): (4, 8, _both(lambda p: (p * (4 * 9 + 8 * 4), 4 * 9 + 8 * 4 + 2 * 8))),
    ("dil_conv_5x5", ()): (4, 8, _both(lambda p: (p * (4 * 25 + 8 * 4), 4 * 25 + 8 * 4 + 2 * 8))),
    ("relu_conv_bn", ()): (4, 8, _both(lambda p: (p * 8 * 4, 8 * 4 + 2 * 8))),
    ("relu_conv_bn", (("kernel", 3),)): (4, 8, _both(lambda p: (p * 8 * 4 * 9, 8 * 4 * 9 + 2 * 8))),
    # stride 1: one 1x1 4->8; stride 2: two 1x1 4->4
    ("factorized_reduce", ()): (4, 8, {1: (P1 * 8 * 4, 8 * 4 + 2 * 8), 2: (2 * P2 * 4 * 4, 2 * 4 * 4 + 2 * 8)}),
    ("factorized_reduce", (("affine", False), ("relu", False))): (4, 8, {2: (2 * P2 * 4 * 4, 2 * 4 * 4)}),
    ("enas_sep_conv_3x3", ()): (4, 8, _both(lambda p: (p * (4 * 9 + 8 * 4), 4 * 9 + 8 * 4 + 2 * 8))),
    ("enas_sep_conv_5x5", ()): (4, 8, _both(lambda p: (p * (4 * 25 + 8 * 4), 4 * 25 + 8 * 4 + 2 * 8))),
    # StdConv 1x1 4->8 on 8x8 (BN without affine), conv kxk 8->8 (stride), BN without affine
    ("enas_conv_3x3", ()): (4, 8, _both(lambda p: (P1 * 8 * 4 + p * 8 * 8 * 9, 8 * 4 + 8 * 8 * 9))),
    ("enas_conv_5x5", ()): (4, 8, _both(lambda p: (P1 * 8 * 4 + p * 8 * 8 * 25, 8 * 4 + 8 * 8 * 25))),
    # separable: dw 8xkxk + pw 8->8 instead of the full conv
    ("enas_conv_3x3", (("separable", True),)): (4, 8, _both(lambda p: (P1 * 32 + p * (72 + 64), 32 + 72 + 64))),
    ("enas_conv_5x5", (("separable", True),)): (4, 8, _both(lambda p: (P1 * 32 + p * (200 + 64), 32 + 200 + 64))),
    # micro: channels change -> StdConv 1x1 4->8 first; same channels -> the pooling alone
    ("enas_max_pool_3x3", ()): (4, 8, _both(lambda p: (P1 * 8 * 4, 8 * 4))),
    ("enas_avg_pool_3x3", ()): (8, 8, _both(lambda p: (0, 0))),
    # macro PoolBranch: StdConv 1x1 8->8 always, pooling, BN without affine
    ("enas_avg_pool_3x3", (("macro", True),)): (8, 8, _both(lambda p: (P1 * 8 * 8, 8 * 8))),
    ("enas_std_conv", ()): (4, 8, _both(lambda p: (p * 8 * 4, 8 * 4))),
}
CASES = [
    (name, dict(kw), s, cin, cout, counts) for (name, kw), (cin, cout, per) in HAND.items() for s, counts in per.items()
]
CASE_IDS = [f"{n}{''.join(f'-{k}={v}' for k, v in kw.items())}-s{s}" for n, kw, s, *_ in CASES]
NEW_BLOCKS = sorted({name for name, _ in HAND})


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)  # nnabla initializers draw from numpy's global generator


def _x(shape, seed=0):
    return nn.Variable.from_numpy_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("name,kw,stride,cin,cout,counts", CASES, ids=CASE_IDS)
def test_shape_and_hand_counts(name, kw, stride, cin, cout, counts):
    block = build_block(name, cin, cout, stride, **kw)
    y = block(_x((2, cin, 8, 8)))
    if y.parent is not None:  # skip_connect at stride 1 returns its input
        y.forward()
    assert y.shape == (2, cout, 8 // stride, 8 // stride) and np.isfinite(y.d).all()
    graph = count_module(block, (cin, 8, 8))
    assert (graph["flops"], graph["params"]) == counts
    assert graph["params"] == sum(v.size for v in block.get_parameters(grad_only=True).values())


def test_every_new_block_has_a_hand_count():
    from core.registries import BLOCKS

    cell_ops = {n for n in BLOCKS.names() if BLOCKS.get(n).__module__ == "search_space.blocks.cell_ops"}
    assert cell_ops == set(NEW_BLOCKS)


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_is_free_and_has_no_mac_function(stride):
    block = build_block("zero", 4, 8, stride)
    x = _x((2, 4, 7, 7))
    y = block(x)
    y.forward()
    assert y.shape == (2, 8, 7 if stride == 1 else 4, 7 if stride == 1 else 4) and not y.d.any()
    types = []
    y.visit(lambda f: types.append(f.info.type_name))
    assert not {"Convolution", "DepthwiseConvolution", "Deconvolution", "Affine"} & set(types)
    assert count_graph(y) == {"flops": 0.0, "params": 0.0}
    assert not block.get_parameters(grad_only=False)


@pytest.mark.parametrize("kernel,dilation", [(3, 2), (5, 2), (3, 3)])
def test_dilated_conv_keeps_size_matches_spread_kernel_and_counts(kernel, dilation):
    conv = Conv2d(3, 4, kernel, dilation=dilation)
    assert conv.pad == dilation * (kernel // 2)
    x = _x((1, 3, 9, 9))
    y = conv(x)
    y.forward()
    assert y.shape == (1, 4, 9, 9)
    # the same result from an undilated convolution whose kernel has dilation-1 zeros between taps
    w = conv.get_parameters()["W"].d
    span = dilation * (kernel - 1) + 1
    spread = np.zeros((4, 3, span, span), np.float32)
    spread[:, :, ::dilation, ::dilation] = w
    ref = F.convolution(x, nn.Variable.from_numpy_array(spread), pad=(span // 2,) * 2)
    ref.forward()
    np.testing.assert_allclose(y.d, ref.d, rtol=1e-5, atol=1e-5)
    assert count_graph(y) == {"flops": 81 * 4 * 3 * kernel * kernel, "params": 4 * 3 * kernel * kernel}


def test_dil_conv_uses_dilation_2():
    y = build_block("dil_conv_5x5", 8, 8, 1)(nn.Variable((1, 8, 8, 8)))
    convs = []
    kinds = ("Convolution", "DepthwiseConvolution")
    y.visit(lambda f: convs.append(f.info.args) if f.info.type_name in kinds else None)
    assert [c["dilation"] for c in convs] == [[2, 2], [1, 1]] and convs[0]["pad"] == [4, 4]


@pytest.mark.parametrize("size,cout", [(8, 8), (7, 7)])
def test_factorized_reduce_halves_and_samples_both_phases(size, cout):
    block = build_block("factorized_reduce", 1, cout, 2, relu=False)
    for name, p in block.get_parameters(grad_only=False).items():
        if name.endswith("/W"):
            p.d = 1.0  # both convolutions copy the single input channel
    block.training = False  # running stats 0/1: BN is the identity (up to eps)
    x = _x((1, 1, size, size))
    y = block(x)
    y.forward()
    half = (size + 1) // 2
    assert y.shape == (1, cout, half, half)
    first, second = cout - cout // 2, cout // 2
    np.testing.assert_allclose(y.d[0, :first], np.broadcast_to(x.d[0, 0, ::2, ::2], (first, half, half)), atol=1e-4)
    shifted = np.zeros((half, half), np.float32)
    shifted[: size // 2, : size // 2] = x.d[0, 0, 1::2, 1::2]  # odd sizes: the last phase-1 pixel is padding
    np.testing.assert_allclose(y.d[0, first:], np.broadcast_to(shifted, (second, half, half)), atol=1e-4)


def test_avg_pool_excludes_padding():
    x = nn.Variable.from_numpy_array(np.ones((1, 8, 5, 5), np.float32))
    block = build_block("avg_pool_3x3", 8, 8, 1)
    block.training = False
    y = block(x)
    y.forward()
    np.testing.assert_allclose(y.d, 1.0, rtol=1e-4)  # borders average 4 or 6 ones, not 9 with zeros


def test_channel_keeping_shape_rules():
    for name in ("max_pool_3x3", "avg_pool_3x3", "skip_connect"):
        assert block_allows(name, 8, 8, 2) and not block_allows(name, 8, 16, 1) and not block_allows(name, 8, 16, 2)
        with pytest.raises(ArchitectureError, match="keeps the channels, so it needs in_channels == out_channels"):
            build_block(name, 8, 16, 2)
    for name in ("zero", "factorized_reduce", "sep_conv_3x3", "enas_max_pool_3x3", "enas_conv_3x3"):
        assert block_allows(name, 8, 16, 2)
    with pytest.raises(ArchitectureError, match="stride 1 or 2"):
        build_block("factorized_reduce", 8, 8, 4)


def test_batchnorm_without_affine_has_constant_untrained_scale_and_shift():
    bn = BatchNorm2d(4, affine=False)
    x = _x((8, 4, 3, 3))
    y = bn(x)
    y.forward()
    params = bn.get_parameters(grad_only=False)
    assert not bn.get_parameters(grad_only=True)
    assert not params["beta"].need_grad and not params["gamma"].need_grad  # a call must not flip the flag
    assert (params["gamma"].d == 1.0).all() and (params["beta"].d == 0.0).all()
    np.testing.assert_allclose(y.d.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="zero_gamma needs affine"):
        BatchNorm2d(4, zero_gamma=True, affine=False)


# ------------------------------------------------------------------------------------------------ FBNet

# the plain block's parameter names, as existing checkpoints hold them
MOBILE_E3_NAMES = [
    "@expand/W", "@expand_bn/beta", "@expand_bn/gamma", "@expand_bn/mean", "@expand_bn/var",
    "@dw/W", "@dw_bn/beta", "@dw_bn/gamma", "@dw_bn/mean", "@dw_bn/var",
    "@project/W", "@project_bn/beta", "@project_bn/gamma", "@project_bn/mean", "@project_bn/var",
]  # fmt: skip


def _shapes(block):
    return {k: v.shape for k, v in block.get_parameters(grad_only=False).items()}


@pytest.mark.parametrize("expansion", [1, 3])
def test_mobile_group_1_is_the_plain_block(expansion):
    plain = build_block("mobile", 8, 8, 1, expansion=expansion, kernel=3)
    grouped = build_block("mobile", 8, 8, 1, expansion=expansion, kernel=3, group=1)
    assert _shapes(plain) == _shapes(grouped)
    assert count_module(plain, (8, 8, 8)) == count_module(grouped, (8, 8, 8))
    if expansion == 3:
        assert sorted(_shapes(plain)) == sorted(MOBILE_E3_NAMES)
    else:
        assert not any("expand" in k for k in _shapes(plain))


@pytest.mark.parametrize("stride", [1, 2])
def test_fbnet_k3_e1_g2_hand_count(stride):
    # FBNet k3_e1_g2, 8->8: grouped 1x1 8->8 (g=2: 4 inputs per output) + shuffle, dw 3x3, grouped 1x1 8->8
    block = build_block("mobile", 8, 8, stride, expansion=1, kernel=3, group=2, activation="relu")
    p = P1 if stride == 1 else P2
    counts = count_module(block, (8, 8, 8))
    assert counts["flops"] == P1 * 8 * 4 + p * 8 * 9 + p * 8 * 4
    assert counts["params"] == 8 * 4 + 8 * 9 + 8 * 4 + 2 * (8 + 8 + 8)
    assert _shapes(block)["@expand/W"] == (8, 4, 1, 1) and _shapes(block)["@project/W"] == (8, 4, 1, 1)
    y = block(_x((2, 8, 8, 8)))
    y.forward()
    assert y.shape == (2, 8, 8 // stride, 8 // stride)


def test_fbnet_k5_e3_g2_hand_count():
    block = build_block("mobile", 8, 16, 2, expansion=3, kernel=5, group=2)
    counts = count_module(block, (8, 8, 8))
    assert counts["flops"] == P1 * 24 * 4 + P2 * 24 * 25 + P2 * 16 * 12
    assert counts["params"] == 24 * 4 + 24 * 25 + 16 * 12 + 2 * (24 + 24 + 16)


def test_channel_shuffle_interleaves_groups():
    x = nn.Variable.from_numpy_array(np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1))
    y = channel_shuffle(x, 2)
    y.forward()
    assert y.d.ravel().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 1) is x


def test_mobile_group_must_divide_channels():
    with pytest.raises(ArchitectureError, match="group 3 must divide"):
        build_block("mobile", 8, 8, 1, expansion=1, group=3)


# ------------------------------------------------------------------------------------------------ training


class _Stemmed(Module):
    """A trainable 1x1 stem in front of the block, so parameter-free blocks must pass gradients back."""

    def __init__(self, block, cin):
        self.stem = Conv2d(cin, cin, 1)
        self.block = block

    def call(self, x):
        return self.block(self.stem(x))


TRAIN_CASES = [(n, {}) for n in NEW_BLOCKS] + [
    ("enas_conv_3x3", {"separable": True}),
    ("enas_max_pool_3x3", {"macro": True}),
    ("mobile", {"expansion": 1, "group": 2}),
]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name,kw", TRAIN_CASES, ids=[f"{n}{'+' if kw else ''}" for n, kw in TRAIN_CASES])
def test_block_trains(name, kw, stride):
    cin = 8 if name in ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "mobile") else 4
    net = _Stemmed(build_block(name, cin, 8, stride, **kw), cin)
    x = _x((4, cin, 8, 8), seed=1)
    target = nn.Variable.from_numpy_array(np.random.default_rng(2).standard_normal((4, 8, 8 // stride, 8 // stride)))
    loss = F.mean(F.squared_error(net(x), target))
    params = net.get_parameters(grad_only=True)
    solver = S.Sgd(0.1)
    solver.set_parameters(params)
    losses = []
    for _ in range(4):
        loss.forward()
        losses.append(float(loss.d))
        solver.zero_grad()
        loss.backward()
        solver.update()
    if name == "zero":
        assert all(not p.g.any() for p in params.values()) and losses[0] == losses[-1]
    else:
        assert losses[-1] < losses[0], losses


def test_cell_ops_export_exactly(tmp_path):
    """NNP (any batch) and ONNX match the live network: avg pooling without padding, the shift, zero."""

    class Cell(Module):
        def __init__(self):
            self.stem = Conv2d(8, 8, 1)
            self.pool = build_block("avg_pool_3x3", 8, 8, 2)
            self.reduce = build_block("skip_connect", 8, 8, 2)
            self.zero = build_block("zero", 8, 8, 2)
            self.enas = build_block("enas_avg_pool_3x3", 8, 8, 1, macro=True)

        def call(self, x):
            h = self.stem(x)
            return self.enas(self.pool(h) + self.reduce(h) + self.zero(h))

    cell = Cell()
    nnp, onnx = str(tmp_path / "m.nnp"), str(tmp_path / "m.onnx")
    export_model(cell, (8, 7, 7), [0.0] * 8, [1.0] * 8, nnp, onnx)
    diffs = verify_export(cell, np.random.default_rng(3).standard_normal((3, 8, 7, 7)), [0.0] * 8, [1.0] * 8, nnp, onnx)
    assert diffs["nnp_max_abs_diff"] < 1e-4 and diffs["onnx_max_abs_diff"] < 1e-4
