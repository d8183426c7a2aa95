"""SGNAS: the unified supernet of "Searching by Generating" (19 MobileNetV2 layers of kernel-mixed expansion groups)."""

from search_space.sgnas.sgnas_supernet import SGNASSupernet
from search_space.space import register_space

register_space("SGNAS", SGNASSupernet)
