"""FBNet: the FBNet-A/B/C search space (22 layers of MB k{3,5} e{1,3,6}, grouped e1 variants, or skip)."""

from search_space.fbnet.fbnet_supernet import FBNetSupernet
from search_space.space import register_space

register_space("FBNet", FBNetSupernet)
