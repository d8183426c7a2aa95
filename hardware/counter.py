"""Count FLOPs (multiply-accumulates) and trainable parameters by walking an nnabla graph.

FLOPs here are the multiply-accumulates of Convolution, DepthwiseConvolution, Deconvolution and
Affine, per sample (batch axis excluded), the convention of the NAS literature. A grouped
convolution's weight already has ``C_in / group`` input channels, so its cost is
``out_elements * (C_in / group) * kh * kw`` with no further division by ``group``.
Parameters are the distinct trainable leaf inputs (``need_grad``) that the graph reads.
"""

from typing import Dict, Tuple

import nnabla as nn
import numpy as np
from nnabla.core.module import Module

_MAC_FUNCTIONS = {"Convolution", "DepthwiseConvolution", "Deconvolution", "Affine"}


def _per_sample(shape: Tuple[int, ...], base_axis: int) -> int:
    return int(np.prod(shape[base_axis:])) if len(shape) > base_axis else 1


def function_macs(fn) -> int:
    """Multiply-accumulates of one nnabla function per sample (0 for functions that are not counted)."""
    name = fn.info.type_name
    if name not in _MAC_FUNCTIONS:
        return 0
    args = fn.info.args
    base_axis = int(args.get("base_axis", 1))
    x, w = fn.inputs[0], fn.inputs[1]
    out = fn.outputs[0]
    if name == "Affine":
        # weight (prod(x.shape[base_axis:]), *out_shape): one MAC per weight per sample
        return int(np.prod(w.shape))
    if name == "DepthwiseConvolution":
        # weight (C * multiplier, kh, kw): each output element reads one kernel window
        return _per_sample(out.shape, base_axis) * int(np.prod(w.shape[1:]))
    if name == "Deconvolution":
        # each input element scatters into C_out/group * kh * kw outputs
        return _per_sample(x.shape, base_axis) * int(np.prod(w.shape[1:]))
    return _per_sample(out.shape, base_axis) * int(np.prod(w.shape[1:]))


def count_graph(y: nn.Variable) -> Dict[str, float]:
    """``{"flops": MACs per sample, "params": trainable parameters}`` of the graph ending at ``y``."""
    totals = {"flops": 0, "params": 0}
    seen_params = set()

    def visit(fn) -> None:
        totals["flops"] += function_macs(fn)
        for v in fn.inputs[1:]:
            if v.parent is None and v.need_grad:
                key = v.data  # NdArray hashes by the shared array: unlinked views count once
                if key not in seen_params:
                    seen_params.add(key)
                    totals["params"] += int(v.size)

    y.visit(visit)
    return {k: float(v) for k, v in totals.items()}


def count_module(module: Module, input_shape: Tuple[int, ...]) -> Dict[str, float]:
    """Count a module in inference mode on one sample of ``input_shape`` (C, H, W)."""
    was_training = module.training
    module.training = False
    try:
        x = nn.Variable((1,) + tuple(input_shape))
        y = module(x)
        return count_graph(y)
    finally:
        module.training = was_training
