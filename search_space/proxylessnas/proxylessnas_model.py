"""ProxylessNAS standalone model: the chosen block at each layer, nothing else."""

from search_space.base_model import BaseModel
from search_space.choices import Arch
from search_space.layers import ModuleList


class ProxylessNASModel(BaseModel):
    """The static network of one ProxylessNAS architecture."""

    def _construct_stage_layers(self, arch: Arch) -> ModuleList:
        return ModuleList([self.build_layer(layer, arch) for layer in self.macro_cfg.search])
