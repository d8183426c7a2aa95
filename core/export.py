"""Export a trained network as an NNP file (nnabla.core.graph_def) for inference elsewhere."""

from collections import OrderedDict
from typing import Tuple

import nnabla as nn
from nnabla.core.graph_def import create_graph_from_variable
from nnabla.core.module import Module

from core.checkpoint import atomic_path


def export_nnp(network: Module, input_shape: Tuple[int, ...], path: str) -> None:
    """Write ``network`` (inference mode) and its parameters to ``path`` (.nnp): input ``x``, output ``y``."""
    was_training = network.training
    network.training = False
    try:
        x = nn.Variable((1,) + tuple(input_shape))
        y = network(x)
        scope = OrderedDict(network.get_parameters(grad_only=False))
        graph = create_graph_from_variable("model", y, names={"x": x, "y": y}, parameter_scope=scope)
        executors = [{"name": "runtime", "network": "model", "data": ["x"], "output": ["y"]}]
        with atomic_path(path) as tmp:
            graph.save(tmp, executors=executors)
    finally:
        network.training = was_training
