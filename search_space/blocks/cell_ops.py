"""The operations of the DARTS and ENAS (micro and macro) spaces as blocks of the one builder.

DARTS (Liu et al. 2019; NNI ``darts_ops``): ``max_pool_3x3``, ``avg_pool_3x3``, ``skip_connect``, ``zero``,
``sep_conv_3x3``/``5x5``, ``dil_conv_3x3``/``5x5`` and the cell helpers ``relu_conv_bn``, ``factorized_reduce``.
ENAS (Pham et al. 2018; NNI ``enas_ops``): ``enas_sep_conv_3x3``/``5x5`` (micro ``SepConvBN``),
``enas_conv_3x3``/``5x5`` (macro ``ConvBranch``), ``enas_max_pool_3x3``/``enas_avg_pool_3x3`` (micro ``Pool``
or macro ``PoolBranch``) and ``enas_std_conv`` (``StdConv``, micro ``Calibration``). Every block takes
``(in_channels, out_channels, stride=1, **kwargs)``; average pooling excludes the padding, as in both.
"""

import nnabla.functions as F
from nnabla.core.module import Module

from core.registries import BLOCKS
from search_space.layers import BatchNorm2d, Conv2d, Identity, ModuleList


def _variant(base: type, name: str, **attrs) -> type:
    """Register a subclass of ``base`` with class attributes ``attrs`` (e.g. its kernel) as block ``name``."""
    doc = f"{base.__doc__.splitlines()[0].rstrip('.')} ({name})."
    cls = type(base)(f"{base.__name__}_{name}", (base,), {**attrs, "__doc__": doc, "__module__": __name__})
    BLOCKS.add(name, cls)
    return cls


def pool2d(x, kind: str, stride: int):
    """3x3 max or average pooling with padding 1; the average is over the pixels inside the image only.

    The average is written as (zero-padded mean) / (zero-padded mean of ones): nnabla's own
    ``including_pad=False`` is exported to ONNX with edge padding by nnabla_converter, which is wrong.
    """
    args = ((3, 3), (stride, stride), True, (1, 1))
    if kind == "max":
        return F.max_pooling(x, *args)
    h, w = x.shape[2:]
    ones = F.r_sub_scalar(F.mul_scalar(F.slice(x, (0, 0, 0), (1, h, w), (1, 1, 1)), 0.0), 1.0)  # (N, 1, H, W)
    return F.div2(F.average_pooling(x, *args, including_pad=True), F.average_pooling(ones, *args, including_pad=True))


# ----------------------------------------------------------------------------------------------- components


class ReLUConvBN(Module):
    """[ReLU] -> kxk convolution (stride, dilation) -> BatchNorm: DARTS ``StdConv`` / cell preprocessing."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 1,
        stride: int = 1,
        affine: bool = True,
        relu: bool = True,
        dilation: int = 1,
    ):
        self.relu = relu
        self.conv = Conv2d(in_channels, out_channels, kernel, stride, dilation=dilation)
        self.bn = BatchNorm2d(out_channels, affine=affine)

    def call(self, x):
        return self.bn(self.conv(F.relu(x) if self.relu else x))


class SepConv(Module):
    """[ReLU] -> depthwise kxk (stride, dilation) -> pointwise 1x1 -> BN: DARTS ``DilConv``, ENAS ``SepConvBN``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        dilation: int = 1,
        affine: bool = True,
        relu: bool = True,
    ):
        self.relu = relu
        self.depthwise = Conv2d(in_channels, in_channels, kernel, stride, group=in_channels, dilation=dilation)
        self.pointwise = Conv2d(in_channels, out_channels, 1)
        self.bn = BatchNorm2d(out_channels, affine=affine)

    def call(self, x):
        return self.bn(self.pointwise(self.depthwise(F.relu(x) if self.relu else x)))


class StdConv(Module):
    """1x1 convolution (stride) -> BatchNorm -> ReLU: ENAS ``StdConv`` (and the micro cell's ``Calibration``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = False):
        self.body = ReLUConvBN(in_channels, out_channels, 1, stride, affine=affine, relu=False)

    def call(self, x):
        return F.relu(self.body(x))


# ------------------------------------------------------------------------------------------------ DARTS


@BLOCKS.register("relu_conv_bn")
class ReLUConvBNBlock(ReLUConvBN):
    """ReLU -> kxk convolution -> BatchNorm (the DARTS preprocessing of cell inputs); ``kernel`` 1 by default."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel: int = 1, affine: bool = True):
        super().__init__(in_channels, out_channels, kernel, stride, affine=affine)


@BLOCKS.register("factorized_reduce")
class FactorizedReduce(Module):
    """[ReLU] -> two 1x1 stride-2 convolutions (input and input shifted by a pixel), concatenated -> BatchNorm.

    At stride 1 it is DARTS's other preprocessing, ReLU -> 1x1 conv -> BN. ``relu=False, affine=False`` is ENAS's
    version. The shifted input is zero-padded at its end, so odd sizes give ceil(H / 2) on both halves.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = True, relu: bool = True):
        if stride not in (1, 2):
            raise TypeError(f"factorized_reduce supports stride 1 or 2, got {stride}")
        if stride == 2 and out_channels < 2:
            raise TypeError(f"factorized_reduce at stride 2 needs out_channels >= 2, got {out_channels}")
        self.stride, self.relu = stride, relu
        half = out_channels // 2 if stride == 2 else 0
        self.conv_1 = Conv2d(in_channels, out_channels - half, 1, stride)
        if half:
            self.conv_2 = Conv2d(in_channels, half, 1, stride)
        self.bn = BatchNorm2d(out_channels, affine=affine)

    def call(self, x):
        x = F.relu(x) if self.relu else x
        y = self.conv_1(x)
        if self.stride == 2:
            # slice only (H, W): a slice of the batch axis would pin the exported NNP's batch size
            h, w = x.shape[2:]
            shifted = F.pad(F.slice(x, (1, 1), (h, w), (1, 1)), (0, 1, 0, 1))
            y = F.concatenate(y, self.conv_2(shifted), axis=1)
        return self.bn(y)


class PoolBN(Module):
    """3x3 pooling (stride, padding 1) -> BatchNorm without affine parameters (DARTS's search pooling)."""

    keeps_channels = True
    pool = "max"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = False):
        self.stride = stride
        self.bn = BatchNorm2d(out_channels, affine=affine)

    def call(self, x):
        return self.bn(pool2d(x, self.pool, self.stride))


MaxPool3x3 = _variant(PoolBN, "max_pool_3x3", pool="max")
AvgPool3x3 = _variant(PoolBN, "avg_pool_3x3", pool="avg")


@BLOCKS.register("skip_connect")
class SkipConnect(Module):
    """Identity at stride 1, ``factorized_reduce`` at stride 2 (DARTS ``skip_connect``)."""

    keeps_channels = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = True):
        self.op = Identity() if stride == 1 else FactorizedReduce(in_channels, out_channels, stride, affine)

    def call(self, x):
        return self.op(x)


@BLOCKS.register("zero")
class Zero(Module):
    """Zeros of the output's shape (``ceil(H / stride)``): no parameters, no convolution, no FLOPs (DARTS ``none``).

    The zeros are computed from the input (a strided slice of one channel times 0, broadcast to
    ``out_channels``) so the graph stays connected to it: a constant would cut the network's input
    off the exported graph when a whole layer is ``zero``.
    """

    #: a LayerChoice in full mode skips it (its weighted output is zero) and derivation never picks it
    is_zero = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = False):
        self.out_channels, self.stride = out_channels, stride  # ``affine`` accepted like every DARTS op's; no BN

    def call(self, x):
        n, _, h, w = x.shape
        z = F.mul_scalar(F.slice(x, (0, 0, 0), (1, h, w), (1, self.stride, self.stride)), 0.0)
        return F.broadcast(z, (n, self.out_channels) + z.shape[2:])


class DartsSepConv(Module):
    """Two stacked [ReLU, depthwise kxk, pointwise 1x1, BN], the first with the stride (DARTS ``sep_conv``)."""

    kernel = 3

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = True):
        self.ops = ModuleList(
            [
                SepConv(in_channels, in_channels, self.kernel, stride, affine=affine),
                SepConv(in_channels, out_channels, self.kernel, 1, affine=affine),
            ]
        )

    def call(self, x):
        return self.ops(x)


class SepConvBlock(SepConv):
    """ReLU -> depthwise kxk (stride, dilation) -> pointwise 1x1 -> BN: DARTS ``dil_conv``, ENAS ``SepConvBN``."""

    kernel, dilation = 3, 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = True):
        super().__init__(in_channels, out_channels, self.kernel, stride, self.dilation, affine)


SepConv3x3 = _variant(DartsSepConv, "sep_conv_3x3", kernel=3)
SepConv5x5 = _variant(DartsSepConv, "sep_conv_5x5", kernel=5)
DilConv3x3 = _variant(SepConvBlock, "dil_conv_3x3", kernel=3, dilation=2)
DilConv5x5 = _variant(SepConvBlock, "dil_conv_5x5", kernel=5, dilation=2)


# ------------------------------------------------------------------------------------------------- ENAS


class ENASConvBranch(Module):
    """1x1 StdConv -> kxk conv (or separable) -> BN -> ReLU, BNs without affine (ENAS macro ``ConvBranch``)."""

    kernel = 3

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, separable: bool = False):
        self.preproc = StdConv(in_channels, out_channels)
        if separable:
            self.conv = SepConv(out_channels, out_channels, self.kernel, stride, affine=False, relu=False)
        else:
            self.conv = ReLUConvBN(out_channels, out_channels, self.kernel, stride, affine=False, relu=False)

    def call(self, x):
        return F.relu(self.conv(self.preproc(x)))


class ENASPool(Module):
    """3x3 pooling; ``macro``: StdConv first and a BN after (``PoolBranch``); else a StdConv only if channels change.

    The micro form is ENAS's ``Pool`` behind the cell's ``Calibration`` (a StdConv where channels differ).
    """

    pool = "max"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, macro: bool = False):
        self.stride, self.macro = stride, macro
        self.preproc = StdConv(in_channels, out_channels) if macro or in_channels != out_channels else Identity()
        if macro:
            self.bn = BatchNorm2d(out_channels, affine=False)

    def call(self, x):
        y = pool2d(self.preproc(x), self.pool, self.stride)
        return self.bn(y) if self.macro else y


@BLOCKS.register("enas_std_conv")
class ENASStdConv(StdConv):
    """1x1 convolution -> BN (no affine by default) -> ReLU: ENAS's channel calibration as a block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, affine: bool = False):
        super().__init__(in_channels, out_channels, stride, affine)


ENASSepConv3x3 = _variant(SepConvBlock, "enas_sep_conv_3x3", kernel=3)
ENASSepConv5x5 = _variant(SepConvBlock, "enas_sep_conv_5x5", kernel=5)
ENASConv3x3 = _variant(ENASConvBranch, "enas_conv_3x3", kernel=3)
ENASConv5x5 = _variant(ENASConvBranch, "enas_conv_5x5", kernel=5)
ENASMaxPool3x3 = _variant(ENASPool, "enas_max_pool_3x3", pool="max")
ENASAvgPool3x3 = _variant(ENASPool, "enas_avg_pool_3x3", pool="avg")
