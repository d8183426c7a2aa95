"""Per-block summary of a whole network (first stage, chosen search layers, last stage) with counted costs."""

from typing import Any, Dict, Iterator, List, Mapping, Tuple

import nnabla as nn
from nnabla.core.module import Module

from hardware.counter import count_module
from search_space.spec import DataInfo, candidate_by_name, space_choices


def _output_shape(module: Module, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """Per-sample output shape of ``module`` (graph construction only, nothing is computed)."""
    was_training = module.training
    module.training = False
    try:
        return tuple(module(nn.Variable((1,) + tuple(input_shape))).shape[1:])
    finally:
        module.training = was_training


def _blocks(
    space: Any, params: Any, data: DataInfo, arch: Mapping[str, Any]
) -> Iterator[Tuple[str, str | None, str, Any, Module]]:
    """``(stage, label, name, spec, module)`` of every block in order; search layers built as the space does."""
    macro_cfg, micro_cfg = space.model_cfg(params, data)
    arch = space_choices(macro_cfg, micro_cfg).validate(arch)
    candidates = candidate_by_name(micro_cfg)
    builder = space.supernet.superlayer_builder
    for spec in macro_cfg.first:
        yield "first", None, spec.block_type, spec, spec.build()
    for layer in macro_cfg.search:
        name = arch[layer.label]
        yield "search", layer.label, name, layer, builder.build_standalone(layer, candidates[name])
    for spec in macro_cfg.last:
        yield "last", None, spec.block_type, spec, spec.build()


def network_summary(space: Any, params: Any, data: DataInfo, arch: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One JSON-ready row per block of the whole network of ``arch``, costs counted on each block's real input."""
    shape: Tuple[int, ...] = (data.in_channels, data.input_size, data.input_size)
    rows: List[Dict[str, Any]] = []
    for stage, label, name, spec, module in _blocks(space, params, data, arch):
        counts = count_module(module, shape)
        # blocks after a rank change (global pooling -> linear) have no spatial input
        input_size: int | None = int(shape[1]) if len(shape) == 3 else None
        rows.append(
            {
                "stage": stage,
                "label": label,
                "name": str(name),
                "in_channels": int(spec.in_channels),
                "out_channels": int(spec.out_channels),
                "stride": int(spec.stride),
                "input_size": input_size,
                "flops": float(counts["flops"]),
                "params": float(counts["params"]),
            }
        )
        shape = _output_shape(module, shape)
    return rows
