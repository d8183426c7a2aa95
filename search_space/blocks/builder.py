"""The one block builder every space uses: ``build_block(block_type, in_ch, out_ch, stride, **kw)``."""

from typing import Any

from nnabla.core.module import Module

from core.errors import ArchitectureError
from core.registries import BLOCKS


def build_block(block_type: str, in_channels: int, out_channels: int, stride: int = 1, **kwargs: Any) -> Module:
    """Construct the registered block ``block_type``; unknown types and bad shapes raise clear errors."""
    cls = BLOCKS.get(block_type)
    if not block_allows(block_type, in_channels, out_channels, stride):
        rule = "the shape, so it needs in_channels == out_channels and stride 1"
        if not _keeps_shape(cls):
            rule = "the channels, so it needs in_channels == out_channels"
        raise ArchitectureError(
            f"block {block_type!r} keeps {rule}; got {in_channels}->{out_channels}, stride {stride}"
        )
    try:
        return cls(in_channels, out_channels, stride, **kwargs)
    except TypeError as err:
        raise ArchitectureError(f"block {block_type!r}: {err}") from None


def block_allows(block_type: str, in_channels: int, out_channels: int, stride: int) -> bool:
    """Whether ``block_type`` can map ``in_channels`` to ``out_channels`` at ``stride``.

    Shape rules are class attributes of the block: ``shape_preserving`` (identity-like: same channels,
    stride 1) and ``keeps_channels`` (e.g. pooling: same channels, any stride).
    """
    cls = BLOCKS.get(block_type)
    if _keeps_shape(cls):
        return in_channels == out_channels and stride == 1
    if getattr(cls, "keeps_channels", False):
        return in_channels == out_channels
    return True


def _keeps_shape(cls: Any) -> bool:
    return bool(getattr(cls, "shape_preserving", False))
