"""DARTS: the differentiable-architecture-search cell space (normal + reduction cells, 8 operations per edge)."""

from search_space.darts.darts_supernet import DARTSParams, DARTSSupernet
from search_space.space import register_space

__all__ = ["DARTSParams", "DARTSSupernet"]

register_space("DARTS", DARTSSupernet)
