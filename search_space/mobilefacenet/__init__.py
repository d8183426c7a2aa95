"""MobileFaceNet: the MobileFaceNet macro with searchable bottlenecks (MB k x e, MixConv, skip) and a GDConv head."""

from search_space.mobilefacenet.mobilefacenet_supernet import MobileFaceNetSupernet
from search_space.space import register_space

register_space("MobileFaceNet", MobileFaceNetSupernet)
