"""Build computation graphs without nnabla's module tracing.

Every top-level call of an nnabla ``Module`` is recorded into a global ``ProtoGraphBuilder`` (used by
``nn.graph_def`` export), which keeps one ProtoNetwork per call and walks all parameters each time. A
training loop that rebuilds its graph every step (single-path one-shot) would keep one network per step
— a leak over a long run — and pay ~15 % of a small step for it. Graphs for training and evaluation are
built inside ``untraced()``; export uses ``create_graph_from_variable``, which needs no tracing.
"""

import contextlib
from typing import Iterator

import nnabla.core.graph_def as graph_def


class _NoTrace:
    """The part of ProtoGraphBuilder that ``Module.__call__`` uses, doing nothing."""

    def begin_module(self, module: object) -> None:
        return None

    def end_module(self) -> None:
        return None


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Within the block, Module calls build ordinary graphs and record nothing globally."""
    saved = graph_def.proto_graph_builder
    graph_def.proto_graph_builder = _NoTrace()
    try:
        yield
    finally:
        graph_def.proto_graph_builder = saved
