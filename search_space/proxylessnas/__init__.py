"""ProxylessNAS (CIFAR variant): MobileNetV2 backbone, each layer MB{3,6} x k{3,5,7} or skip."""

from search_space.proxylessnas.proxylessnas_lookup_table import ProxylessNASLookUpTable
from search_space.proxylessnas.proxylessnas_model import ProxylessNASModel
from search_space.proxylessnas.proxylessnas_supernet import ProxylessNASSupernet
from search_space.space import register_space

register_space("ProxylessNAS", ProxylessNASSupernet, ProxylessNASModel, ProxylessNASLookUpTable)
