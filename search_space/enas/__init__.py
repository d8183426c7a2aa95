"""ENAS: the micro (cell) and macro (layer) search spaces of Pham et al. 2018, as in NNI's search-space zoo."""

from search_space.enas.macro import ENASMacroParams, ENASMacroSupernet
from search_space.enas.micro import ENASMicroParams, ENASMicroSupernet
from search_space.space import register_space

__all__ = ["ENASMacroParams", "ENASMacroSupernet", "ENASMicroParams", "ENASMicroSupernet"]

register_space("ENASMicro", ENASMicroSupernet)
register_space("ENASMacro", ENASMacroSupernet)
