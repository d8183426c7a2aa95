"""Select the nnabla compute context; the CUDA extension is imported only when asked for."""

import importlib

import nnabla as nn
from nnabla.ext_utils import get_extension_context

from core.errors import ConfigError


def set_context(name: str, device_id: str = "0") -> object:
    """Set nnabla's default context to ``cpu`` or ``cudnn`` and return it."""
    if name == "cudnn":
        try:
            importlib.import_module("nnabla_ext.cudnn")
        except ImportError:
            raise ConfigError(
                "context: cudnn needs the nnabla-ext-cuda package matching your CUDA "
                "(pip install nnabla-ext-cuda<ver>); use context: cpu otherwise"
            ) from None
        ctx = get_extension_context("cudnn", device_id=str(device_id))
    elif name == "cpu":
        ctx = get_extension_context("cpu")
    else:
        raise ConfigError(f"context: invalid value {name!r}; valid: cpu, cudnn")
    nn.set_default_context(ctx)
    return ctx
