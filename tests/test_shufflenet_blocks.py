"""ShuffleNetV2 / Xception units, MixConv and PReLU: hand counts (stride 1 and 2, in == out and in != out),
the split / shuffle wiring, training, and exact NNP / ONNX export."""

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np
import pytest
from nnabla.core.module import Module

from core.errors import ArchitectureError, ConfigError
from core.export import export_model, verify_export
from core.registries import BLOCKS
from hardware.counter import count_module
from search_space.blocks.builder import build_block
from search_space.blocks.mixconv import split_channels
from search_space.layers import Activation, Conv2d

P1, P2 = 8 * 8, 4 * 4  # output pixels of an 8x8 input at stride 1 and 2


def _bn(*channels):
    return sum(2 * c for c in channels)


# (block, kwargs, in, out, stride) -> (MACs, trainable params) on an 8x8 input, counted by hand.
HAND = {
    # split form: 4 channels pass, the branch is 1x1 4->4, dw 4 kxk, 1x1 4->4 (BN after each)
    ("shufflenet", 3, 8, 8, 1): (P1 * (16 + 4 * 9 + 16), 16 + 4 * 9 + 16 + _bn(4, 4, 4)),
    ("shufflenet", 7, 8, 8, 1): (P1 * (16 + 4 * 49 + 16), 16 + 4 * 49 + 16 + _bn(4, 4, 4)),
    # two branches, no widening: each gives out // 2 = 4. Left: dw 8 kxk s2, 1x1 8->4. Right: 1x1 8->4 (on 8x8),
    # dw 4 kxk s2, 1x1 4->4
    ("shufflenet", 3, 8, 8, 2): (
        P2 * (8 * 9 + 32) + P1 * 32 + P2 * (4 * 9 + 16),
        8 * 9 + 32 + _bn(8, 4) + 32 + 4 * 9 + 16 + _bn(4, 4, 4),
    ),
    # widening (SPOS): the left branch keeps the 8 input channels, the right one gives 16 - 8; mid = 16 // 2
    ("shufflenet", 5, 8, 16, 2): (
        P2 * (8 * 25 + 64) + P1 * 64 + P2 * (8 * 25 + 64),
        8 * 25 + 64 + _bn(8, 8) + 64 + 8 * 25 + 64 + _bn(8, 8, 8),
    ),
    # a widening unit whose stride was dropped: the two-branch form at stride 1
    ("shufflenet", 3, 8, 16, 1): (
        P1 * (8 * 9 + 64 + 64 + 8 * 9 + 64),
        8 * 9 + 64 + 64 + 8 * 9 + 64 + _bn(8, 8, 8, 8, 8),
    ),
    # Xception split form: [dw 4 3x3, 1x1 4->4] x 3 on 4 of the 8 channels
    ("shufflenet_xception", 3, 8, 8, 1): (P1 * 3 * (36 + 16), 3 * (36 + 16) + _bn(*[4] * 6)),
    # widening, stride 2: left dw 8 s2 + 1x1 8->8; right [dw 8 + 1x1 8->8] x 3, the first dw with the stride
    ("shufflenet_xception", 3, 8, 16, 2): (P2 * 4 * (72 + 64), 4 * (72 + 64) + _bn(*[8] * 8)),
    # no widening at stride 2: left dw 8 + 1x1 8->4; right dw 8 s2, 1x1 8->4, dw 4, 1x1 4->4, dw 4, 1x1 4->4
    ("shufflenet_xception", 3, 8, 8, 2): (
        P2 * (72 + 32) + P2 * (72 + 32 + 36 + 16 + 36 + 16),
        72 + 32 + 72 + 32 + 36 + 16 + 36 + 16 + _bn(8, 4, 8, 4, 4, 4, 4, 4),
    ),
    # MixConv e2, kernels (3, 5, 7): hidden 16 split 6 / 5 / 5; expand 8->16, mixed dw, project 16->out
    ("mixconv", (3, 5, 7), 8, 8, 1): (P1 * (128 + 6 * 9 + 5 * 25 + 5 * 49 + 128), 128 + 424 + 128 + _bn(16, 16, 8)),
    ("mixconv", (3, 5, 7), 8, 16, 2): (P1 * 128 + P2 * (424 + 256), 128 + 424 + 256 + _bn(16, 16, 16)),
    # kernels (3, 5): hidden 16 split 8 / 8, at stride 2 with in == out
    ("mixconv", (3, 5), 8, 8, 2): (P1 * 128 + P2 * (8 * 9 + 8 * 25 + 128), 128 + 272 + 128 + _bn(16, 16, 8)),
}


def _kwargs(name, k):
    return {"expansion": 2, "kernels": k} if name == "mixconv" else {"kernel": k}


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)  # nnabla initializers draw from numpy's global generator


def _x(shape, seed=0):
    return nn.Variable.from_numpy_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize(
    "name,k,cin,cout,stride", list(HAND), ids=[f"{n}-k{k}-{a}to{b}-s{s}" for n, k, a, b, s in HAND]
)
def test_hand_counts_and_shapes(name, k, cin, cout, stride):
    block = build_block(name, cin, cout, stride, **_kwargs(name, k))
    y = block(_x((2, cin, 8, 8)))
    y.forward()
    assert y.shape == (2, cout, 8 // stride, 8 // stride) and np.isfinite(y.d).all()
    counts = count_module(block, (cin, 8, 8))
    assert (counts["flops"], counts["params"]) == HAND[(name, k, cin, cout, stride)]
    assert counts["params"] == sum(v.size for v in block.get_parameters(grad_only=True).values())


def test_every_new_block_has_a_hand_count():
    mine = {n for n in BLOCKS.names() if BLOCKS.get(n).__module__.rsplit(".", 1)[-1] in ("shufflenet", "mixconv")}
    mine |= {n for n in BLOCKS.names() if BLOCKS.get(n).__module__.endswith("shufflenet_xception")}
    assert mine == {name for name, *_ in HAND} == {"shufflenet", "shufflenet_xception", "mixconv"}


@pytest.mark.parametrize("name", ["shufflenet", "shufflenet_xception"])
def test_split_form_passes_half_and_interleaves_it(name):
    """Stride 1: the first half of the channels reaches the even output positions untouched (concat + shuffle)."""
    block = build_block(name, 8, 8, 1)
    x = _x((2, 8, 5, 5))
    y = block(x)
    y.forward()
    np.testing.assert_array_equal(y.d[:, 0::2], x.d[:, :4])
    assert not np.allclose(y.d[:, 1::2], x.d[:, 4:])


def test_two_branch_form_shuffles_left_and_right():
    """Stride 2 widening 8 -> 16: the left branch's 8 channels and the right branch's 8 alternate."""
    block = build_block("shufflenet", 8, 16, 2)
    block.training = False
    x = _x((1, 8, 8, 8))
    y = block(x)
    y.forward()
    left = block.left(x)
    right = block.right(x)
    F.sink(left, right).forward()
    np.testing.assert_allclose(y.d[:, 0::2], left.d, atol=1e-6)
    np.testing.assert_allclose(y.d[:, 1::2], right.d, atol=1e-6)


def test_shape_errors_are_clear():
    with pytest.raises(ArchitectureError, match="even number of output channels"):
        build_block("shufflenet", 8, 9, 2)
    with pytest.raises(ArchitectureError, match="stride 1 or 2"):
        build_block("shufflenet_xception", 8, 16, 3)
    with pytest.raises(ArchitectureError, match="odd sizes"):
        build_block("mixconv", 8, 8, 1, kernels=(3, 4))
    with pytest.raises(ArchitectureError, match="cannot be split"):
        build_block("mixconv", 2, 2, 1, expansion=1, kernels=(3, 5, 7))


def test_mixnet_channel_split():
    assert split_channels(16, 3) == [6, 5, 5] and split_channels(12, 3) == [4, 4, 4] and split_channels(7, 1) == [7]
    block = build_block("mixconv", 4, 4, 1, expansion=3, kernels=(3, 5, 7))
    shapes = [block.dw.convs[i].w_shape for i in range(3)]
    assert shapes == [(4, 3, 3), (4, 5, 5), (4, 7, 7)]  # depthwise: one k x k filter per channel


def test_mixconv_single_kernel_is_the_inverted_residual():
    """One kernel: the same parameters, counts and outputs as ``mobile`` with the same weights."""
    mix = build_block("mixconv", 8, 8, 1, expansion=3, kernels=(5,))
    mob = build_block("mobile", 8, 8, 1, expansion=3, kernel=5)
    assert count_module(mix, (8, 6, 6)) == count_module(mob, (8, 6, 6))
    src = list(mix.get_parameters(grad_only=False).values())
    dst = list(mob.get_parameters(grad_only=False).values())
    for a, b in zip(src, dst):
        b.d = np.random.default_rng(a.size).standard_normal(a.shape)
        a.d = b.d
    x = _x((2, 8, 6, 6))
    ya, yb = mix(x), mob(x)
    F.sink(ya, yb).forward()
    np.testing.assert_allclose(ya.d, yb.d, rtol=1e-5, atol=1e-5)


def test_prelu_activation_learns_a_slope_per_channel():
    act = Activation("prelu", 3)
    slope = act.get_parameters()["slope"]
    assert slope.shape == (3,) and np.allclose(slope.d, 0.25) and slope.need_grad
    slope.d = [0.0, 0.5, 1.0]
    x = nn.Variable.from_numpy_array(np.full((1, 3, 2, 2), -2.0, np.float32))
    y = act(x)
    y.forward()
    np.testing.assert_allclose(y.d[0, :, 0, 0], [0.0, -1.0, -2.0])
    with pytest.raises(ConfigError, match="needs the channel count"):
        Activation("prelu")
    with pytest.raises(ConfigError, match=r"unknown activation 'prelux' \(did you mean prelu\?\)"):
        Activation("prelux", 3)
    # a PReLU block counts its slopes among the parameters, not among the MACs
    plain = count_module(build_block("mobile", 8, 8, 1, expansion=2, activation="relu"), (8, 4, 4))
    prelu = count_module(build_block("mobile", 8, 8, 1, expansion=2, activation="prelu"), (8, 4, 4))
    assert prelu["flops"] == plain["flops"] and prelu["params"] == plain["params"] + 16 + 16


class _Stemmed(Module):
    """A trainable 1x1 stem in front of the block, so gradients must pass through the unit's slices."""

    def __init__(self, block, cin):
        self.stem = Conv2d(cin, cin, 1)
        self.block = block

    def call(self, x):
        return self.block(self.stem(x))


@pytest.mark.parametrize("name,kw", [("shufflenet", {"kernel": 5}), ("shufflenet_xception", {}), ("mixconv", {})])
@pytest.mark.parametrize("stride,cout", [(1, 8), (2, 16)])
def test_block_trains(name, kw, stride, cout):
    net = _Stemmed(build_block(name, 8, cout, stride, activation="prelu", **kw), 8)
    x = _x((4, 8, 8, 8), seed=1)
    target = nn.Variable.from_numpy_array(np.random.default_rng(2).standard_normal((4, cout, 8 // stride, 8 // stride)))
    loss = F.mean(F.squared_error(net(x), target))
    params = net.get_parameters(grad_only=True)
    solver = S.Sgd(0.1)
    solver.set_parameters(params)
    losses = []
    for _ in range(5):
        loss.forward()
        losses.append(float(loss.d))
        solver.zero_grad()
        loss.backward()
        solver.update()
    assert losses[-1] < losses[0], losses
    assert np.abs(params["@stem/W"].g).sum() > 0  # the gradient reaches the stem through split, concat and shuffle


def test_blocks_export_exactly(tmp_path):
    """NNP (dynamic batch) and ONNX match the live network: slices, concatenation, shuffle, mixed kernels, PReLU."""

    class Net(Module):
        def __init__(self):
            self.stem = build_block("conv_bn_act", 3, 8, 1, activation="prelu")
            self.a = build_block("shufflenet", 8, 8, 1, kernel=5)
            self.b = build_block("shufflenet_xception", 8, 16, 2)
            self.c = build_block("mixconv", 16, 16, 1, expansion=2, kernels=(3, 5, 7), activation="prelu")
            self.d = build_block("shufflenet", 16, 16, 2, kernel=7)

        def call(self, x):
            return self.d(self.c(self.b(self.a(self.stem(x)))))

    net = Net()
    for p in net.get_parameters(grad_only=False).values():  # non-trivial BN statistics and slopes
        p.d = p.d + 0.1 * np.random.default_rng(p.size).standard_normal(p.shape)
    nnp, onnx = str(tmp_path / "m.nnp"), str(tmp_path / "m.onnx")
    export_model(net, (3, 9, 9), [0.5] * 3, [2.0] * 3, nnp, onnx)
    images = np.random.default_rng(3).standard_normal((3, 3, 9, 9))
    diffs = verify_export(net, images, [0.5] * 3, [2.0] * 3, nnp, onnx)
    assert diffs["nnp_max_abs_diff"] < 1e-4 and diffs["onnx_max_abs_diff"] < 1e-4
