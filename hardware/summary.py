"""Per-block summary of a whole network (first stage, chosen search layers, last stage) with counted costs."""

from typing import Any, Dict, Iterator, List, Mapping, Tuple

import nnabla as nn
from nnabla.core.module import Module

from hardware.counter import count_module
from search_space.freeform import observe, unread_choices
from search_space.mutables import LayerChoice
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
    if not space.macro:
        return choice_summary(space, params, data, arch)
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


def choice_summary(space: Any, params: Any, data: DataInfo, arch: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Free-form spaces: one row for the fixed layers, one per LayerChoice with its chosen candidate."""
    table = space.build_lookup_table(params, data)
    arch = table.choices.validate(arch)
    supernet = space.build_supernet(params, data)
    supernet.set_active(arch)
    shape = (data.in_channels, data.input_size, data.input_size)
    shapes, unread = observe(supernet, shape).shapes, unread_choices(supernet, shape)
    fixed = {"stage": "first", "label": None, "name": "fixed layers", "in_channels": data.in_channels}
    rows = [{**fixed, "out_channels": data.num_classes, "stride": 1, "input_size": data.input_size}]
    rows[0].update({m: float(table.base[m]) for m in ("flops", "params")})
    for site in supernet.mutables():
        m = site.mutable
        if not isinstance(m, LayerChoice) or not site.on_path() or site.path in unread:
            continue
        module, shape = m.candidates[m.decision.index], shapes[site.path][1:]
        out = _output_shape(module, shape)
        counts = count_module(module, shape)
        rows.append(
            {
                "stage": "search",
                "label": m.decision.label,
                "name": str(m.decision.value),
                "in_channels": int(shape[0]),
                "out_channels": int(out[0]),
                "stride": max(1, int(shape[-1]) // int(out[-1])) if len(out) == 3 and len(shape) == 3 else 1,
                "input_size": int(shape[-1]) if len(shape) == 3 else None,
                "flops": float(counts["flops"]),
                "params": float(counts["params"]),
            }
        )
    return rows
