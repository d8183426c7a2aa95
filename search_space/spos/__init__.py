"""SPOS: the Single Path One-Shot ShuffleNetV2 space (20 layers of ShuffleNet k3/k5/k7 or Xception units)."""

from search_space.space import register_space
from search_space.spos.spos_supernet import SPOSSupernet

register_space("SPOS", SPOSSupernet)
