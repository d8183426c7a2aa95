"""Inference over a data split (accuracy, loss) and BatchNorm recalibration of a chosen path."""

from typing import Callable, Dict, List

import nnabla as nn
import numpy as np
from nnabla.core.module import Module

from core.graph import untraced
from dataset.base import ArrayDataset, eval_batches
from search_space.layers import BatchNorm2d, batchnorm_modules


def evaluate_network(
    network: Module,
    data: ArrayDataset,
    batch_size: int,
    max_batches: int | None = None,
    criterion: Callable[[nn.Variable, nn.Variable], nn.Variable] | None = None,
) -> Dict[str, float]:
    """Top-1 accuracy (and mean loss when ``criterion`` is given) in inference mode."""
    was_training = network.training
    network.training = False
    graphs: Dict[int, tuple] = {}
    correct, seen, loss_sum = 0, 0, 0.0
    try:
        for x_np, y_np in eval_batches(data, batch_size, max_batches):
            n = x_np.shape[0]
            if n not in graphs:
                x = nn.Variable(x_np.shape)
                t = nn.Variable(y_np.shape)
                with untraced():
                    logits = network(x)
                logits.persistent = True
                loss = criterion(logits, t) if criterion is not None else None
                graphs[n] = (x, t, logits, loss)
            x, t, logits, loss = graphs[n]
            x.d, t.d = x_np, y_np
            if loss is not None:
                loss.forward(clear_buffer=True)
                loss_sum += float(loss.d) * n
            else:
                logits.forward(clear_buffer=True)
            correct += int((logits.d.argmax(axis=1) == y_np[:, 0]).sum())
            seen += n
    finally:
        network.training = was_training
    out = {"accuracy": correct / max(seen, 1)}
    if criterion is not None:
        out["loss"] = loss_sum / max(seen, 1)
    return out


def recalibrate_bn(
    network: Module, data: ArrayDataset, batch_size: int, batches: int, rng: np.random.Generator
) -> None:
    """Reset the running statistics of every BatchNorm on the active path to the mean of batch statistics.

    One-shot weights are shared by many paths, so their running statistics fit no single path;
    re-estimating them on a few training batches is the standard fix (SPOS).
    """
    if batches <= 0:
        return
    was_training = network.training
    all_bns = batchnorm_modules(network)
    saved = [bn.decay_rate for bn in all_bns]
    try:
        for bn in all_bns:
            bn.decay_rate = 0.0  # running stats := this batch's stats
        network.training = True
        x = nn.Variable((batch_size,) + data.images.shape[1:])
        with untraced():
            y = network(x)
        bns = _bns_in_graph(y, all_bns)
        sums = [[np.zeros(bn.channels), np.zeros(bn.channels)] for bn in bns]
        for _ in range(batches):
            idx = rng.choice(len(data), size=batch_size, replace=len(data) < batch_size)
            x.d = data.batch(idx, None, False)[0]
            y.forward(clear_buffer=True)
            for acc, bn in zip(sums, bns):
                params = bn.get_parameters(grad_only=False)
                acc[0] += params["mean"].d.ravel()
                acc[1] += params["var"].d.ravel()
        for (mean_sum, var_sum), bn in zip(sums, bns):
            params = bn.get_parameters(grad_only=False)
            params["mean"].d = (mean_sum / batches).reshape(params["mean"].shape)
            params["var"].d = (var_sum / batches).reshape(params["var"].shape)
    finally:
        for bn, d in zip(all_bns, saved):
            bn.decay_rate = d
        network.training = was_training


def _bns_in_graph(y: nn.Variable, bns: List[BatchNorm2d]) -> List[BatchNorm2d]:
    """The BatchNorm modules whose running mean the graph ending at ``y`` reads (the active path)."""
    used = set()

    def visit(fn) -> None:
        if fn.info.type_name == "BatchNormalization":
            used.add(fn.inputs[3].data)  # NdArray hashes by the shared array

    y.visit(visit)
    return [bn for bn in bns if bn.get_parameters(grad_only=False)["mean"].data in used]
