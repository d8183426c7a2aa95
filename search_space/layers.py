"""NNabla layer modules whose parameters exist from construction (never created lazily on first call).

Eager parameters let a supernet hand every weight to its optimizers, count parameters and load
checkpoints before any graph is built. Parameters are looked up by name at call time, so
``load_parameters``/``set_parameters`` (which replace the Variables) keep working.
"""

import abc
import sys
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Sequence

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
from nnabla.core.module import MetaClass, Module
from nnabla.parameter import get_parameter_or_create

from core.errors import ConfigError
from core.suggest import did_you_mean

# nnabla's CPU build looks for an optional ``nnabla.nnabla_ext`` package, which does not exist, whenever it
# creates a Variable from numpy or a function, and its compiled function calls try ``nnabla.nnabla.variable``
# (no such module either) for every function they create: each failed import searches every path entry (a third
# of the time building a DARTS supernet, two thirds of copying a graph). Marking them absent makes those imports
# fail at once, as they would anyway.
for _absent in ("nnabla.nnabla_ext", "nnabla.nnabla"):
    sys.modules.setdefault(_absent, None)


class ModuleABCMeta(MetaClass, abc.ABCMeta):
    """nnabla's Module metaclass (methods run in the module's parameter scope) plus abc enforcement."""

    def __new__(mcls, name, bases, namespace, **kw):
        if bases:
            namespace = {
                k: MetaClass.method_wrapper(v)
                if callable(v) and not isinstance(v, (staticmethod, classmethod, type))
                else v
                for k, v in namespace.items()
            }
        return abc.ABCMeta.__new__(mcls, name, bases, namespace, **kw)


class ABCModule(Module, metaclass=ModuleABCMeta):
    """A Module whose abstract methods must be implemented before it can be constructed."""


class ModuleList(Module):
    """An ordered list of sub-modules registered under their positions ("0", "1", ...)."""

    def __init__(self, modules: Sequence[Module] = ()):
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        """Register ``module`` at the next position."""
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds nnabla Modules, got {type(module).__name__}")
        name = str(len(self.submodules))
        self.submodules[name] = module
        module.__dict__["_name"] = name
        module.__dict__["_parent"] = self

    def __getitem__(self, i: int) -> Module:
        return list(self.submodules.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self.submodules.values()))

    def __len__(self) -> int:
        return len(self.submodules)

    def call(self, x):
        for m in self.submodules.values():
            x = m(x)
        return x


def _param(name: str, shape, init, need_grad: bool = True) -> nn.Variable:
    return get_parameter_or_create(name, shape, init, need_grad=need_grad)


class Conv2d(Module):
    """2-D convolution (grouped/depthwise via ``group``, dilated via ``dilation``) with He-normal weights."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        pad: int | None = None,
        group: int = 1,
        with_bias: bool = False,
        dilation: int = 1,
    ):
        if in_channels % group or out_channels % group:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by group {group}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel, self.stride, self.group, self.with_bias = kernel, stride, group, with_bias
        self.dilation = dilation
        # "same" padding: a dilated kernel spans dilation * (kernel - 1) + 1 pixels
        self.pad = dilation * (kernel // 2) if pad is None else pad
        #: one filter per channel: nnabla's DepthwiseConvolution (weights (C, k, k)), which runs ~25 % faster on
        #: the CPU than the same grouped Convolution, forward and backward
        self.depthwise = group == in_channels == out_channels and group > 1
        self.w_shape = (
            (out_channels, kernel, kernel) if self.depthwise else (out_channels, in_channels // group, kernel, kernel)
        )
        fan_in = (in_channels // group) * kernel * kernel
        _param("W", self.w_shape, I.NormalInitializer(sigma=(2.0 / fan_in) ** 0.5))
        if with_bias:
            _param("b", (out_channels,), I.ConstantInitializer(0.0))

    def call(self, x):
        w = _param("W", self.w_shape, None)
        b = _param("b", (self.out_channels,), None) if self.with_bias else None
        geometry = {"pad": (self.pad,) * 2, "stride": (self.stride,) * 2, "dilation": (self.dilation,) * 2}
        if self.depthwise:
            return F.depthwise_convolution(x, w, b, **geometry)
        return F.convolution(x, w, b, group=self.group, **geometry)


class BatchNorm2d(Module):
    """Batch normalisation over channels; batch statistics while ``training``, running ones otherwise.

    ``affine=False`` (DARTS/ENAS search ops) keeps ``beta``/``gamma`` as constant 0/1 parameters with
    ``need_grad=False``: nothing trains or counts them, while checkpoints and the ONNX converter (which
    needs all five BatchNormalization inputs) still see the usual parameter set.
    """

    def __init__(
        self,
        channels: int,
        decay_rate: float = 0.9,
        eps: float = 1e-5,
        zero_gamma: bool = False,
        affine: bool = True,
    ):
        if zero_gamma and not affine:
            raise ValueError("zero_gamma needs affine=True (a constant zero scale would zero the output)")
        self.channels, self.decay_rate, self.eps, self.affine = channels, decay_rate, eps, affine
        shape = (1, channels, 1, 1)
        _param("beta", shape, I.ConstantInitializer(0.0), need_grad=affine)
        _param("gamma", shape, I.ConstantInitializer(0.0 if zero_gamma else 1.0), need_grad=affine)
        _param("mean", shape, I.ConstantInitializer(0.0), need_grad=False)
        _param("var", shape, I.ConstantInitializer(1.0), need_grad=False)

    def call(self, x):
        shape = (1, self.channels, 1, 1)
        # need_grad must be passed as created: get_parameter_or_create overwrites the stored flag otherwise
        beta = _param("beta", shape, None, need_grad=self.affine)
        gamma = _param("gamma", shape, None, need_grad=self.affine)
        mean = _param("mean", shape, None, need_grad=False)
        var = _param("var", shape, None, need_grad=False)
        if self.training and self.__dict__.get("scratch_statistics", False):
            # batch statistics as in training, but the running-average update lands in buffers of this graph
            # only: the module's running statistics are neither changed nor shared (see keep_statistics)
            mean, var = nn.Variable.from_numpy_array(mean.d.copy()), nn.Variable.from_numpy_array(var.d.copy())
        return F.batch_normalization(
            x, beta, gamma, mean, var, axes=[1], decay_rate=self.decay_rate, eps=self.eps, batch_stat=self.training
        )


class Linear(Module):
    """Fully connected layer over the flattened input."""

    def __init__(self, in_features: int, out_features: int, with_bias: bool = True):
        self.in_features, self.out_features, self.with_bias = in_features, out_features, with_bias
        _param(
            "W",
            (in_features, out_features),
            I.UniformInitializer((-((1 / in_features) ** 0.5), (1 / in_features) ** 0.5)),
        )
        if with_bias:
            _param("b", (out_features,), I.ConstantInitializer(0.0))

    def call(self, x):
        w = _param("W", (self.in_features, self.out_features), None)
        b = _param("b", (self.out_features,), None) if self.with_bias else None
        return F.affine(x, w, b, base_axis=1)


def _hswish(x):
    return x * F.relu6(x + 3.0) / 6.0


ACTIVATIONS: Dict[str, Callable] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "hswish": _hswish,
    "swish": F.swish,
    "sigmoid": F.sigmoid,
    "none": lambda x: x,
}


#: activations with a trainable parameter per channel: ``Activation(name, channels)`` creates it
PARAMETRIC_ACTIVATIONS = ("prelu",)
ACTIVATION_NAMES = (*ACTIVATIONS, *PARAMETRIC_ACTIVATIONS)


def activation_fn(name: str) -> Callable:
    """The parameter-free activation function called ``name``; unknown names list the valid ones."""
    if name in PARAMETRIC_ACTIVATIONS:
        raise ConfigError(f"activation {name!r} has a parameter per channel: use Activation({name!r}, channels)")
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {name!r}{did_you_mean(name, ACTIVATION_NAMES)}; valid: {', '.join(ACTIVATION_NAMES)}"
        )
    return ACTIVATIONS[name]


class Activation(Module):
    """An activation chosen by name; ``prelu`` (MobileFaceNet's) learns one slope per channel (initially 0.25)."""

    def __init__(self, name: str, channels: int | None = None):
        self.act_name, self.channels = name, channels
        if name not in PARAMETRIC_ACTIVATIONS:
            activation_fn(name)
        elif channels is None:
            raise ConfigError(f"activation {name!r} needs the channel count of its input")
        else:
            _param("slope", (channels,), I.ConstantInitializer(0.25))

    def call(self, x):
        if self.act_name == "prelu":
            return F.prelu(x, _param("slope", (self.channels,), None), base_axis=1)
        return activation_fn(self.act_name)(x)


class Identity(Module):
    """Returns its input."""

    def call(self, x):
        return x


class GlobalAvgPool(Module):
    """Averages over the spatial axes: (N, C, H, W) -> (N, C)."""

    def call(self, x):
        return F.mean(x, axis=(2, 3))


@contextmanager
def keep_statistics(module: Module) -> Iterator[None]:
    """Graphs built inside the block normalise with batch statistics (in training mode) without updating any
    BatchNorm's running statistics: the graphs share no state, so several can run at once (in threads), in any
    order, with the same results."""
    bns = batchnorm_modules(module)
    for bn in bns:
        bn.__dict__["scratch_statistics"] = True
    try:
        yield
    finally:
        for bn in bns:
            bn.__dict__.pop("scratch_statistics", None)


def batchnorm_modules(module: Module) -> List[BatchNorm2d]:
    """All BatchNorm2d modules under ``module`` (depth-first)."""
    found: List[BatchNorm2d] = []
    stack = [module]
    while stack:
        m = stack.pop()
        if isinstance(m, BatchNorm2d):
            found.append(m)
        stack.extend(reversed(list(m.submodules.values())))
    return found
