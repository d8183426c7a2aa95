"""Measured and estimated costs of a module on one input shape: latency (ms), memory (bytes), FLOPs, parameters.

- ``latency``: wall time of an inference forward pass of the module's nnabla graph (built once), after warm-up
  runs, at the configured batch size, on the current nnabla context. The timed runs are spread over interleaved
  rounds (every graph of a batch of measurements once per round) and a graph's latency is its smallest round
  median: a machine shared with other work runs slow for seconds at a time, and a graph timed only during such a
  phase would read high, while the rounds give every graph several chances at a quiet moment.
- ``memory``: parameter bytes (every leaf the graph reads other than its input: weights and BatchNorm
  statistics) plus the peak activation bytes of the forward pass, where a buffer (the input included) lives
  from the function that writes it to the last function that reads it.
- ``flops`` / ``params``: counted from the graph (``hardware/counter.py``).

``environment()`` describes what a measurement depends on (nnabla version, context, CPU model, threads); a
saved lookup table keeps it in its fingerprint.
"""

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import nnabla as nn
import numpy as np
from nnabla.core.module import Module

from core.graph import untraced
from core.typed import NonNegativeInt, PositiveInt
from hardware.counter import count_graph

COUNTED_METRICS = ("flops", "params")
MEASURED_METRICS = ("latency", "memory")
METRICS = COUNTED_METRICS + MEASURED_METRICS
#: unit of every metric (what tables, logs and reports print)
UNITS = {"flops": "MACs", "params": "parameters", "latency": "ms", "memory": "bytes"}


@dataclass(frozen=True)
class MeasureSettings:
    """How latency is measured: batch size, warm-up runs, timed runs in all, and the interleaved rounds they are
    spread over (each round's median is taken; the smallest is kept)."""

    batch_size: PositiveInt = 1
    warmup: NonNegativeInt = 3
    runs: PositiveInt = 15
    rounds: PositiveInt = 3


def forward_graph(module: Module, input_shape: Sequence[int], batch_size: int = 1) -> Tuple[nn.Variable, nn.Variable]:
    """``(x, y)``: the module's inference graph on a batch of ``input_shape`` (no tracing, random input)."""
    was = module.training
    module.training = False
    try:
        x = nn.Variable((batch_size,) + tuple(input_shape))
        x.d = np.random.default_rng(0).standard_normal(x.shape)
        with untraced():
            y = module(x)
        return x, y
    finally:
        module.training = was


def graphs_latency_ms(
    graphs: Sequence[nn.Variable], settings: MeasureSettings, progress: Callable[[], None] | None = None
) -> List[float]:
    """Milliseconds of ``y.forward()`` for every graph ``y``: ``settings.runs`` timed runs in all, in
    ``settings.rounds`` rounds that each time every graph once (after ``warmup`` runs in the first); each
    graph's smallest round median. A graph computed by nothing (a pass-through) takes 0. ``progress`` is called
    once per graph and round."""
    per_round = max(1, math.ceil(settings.runs / settings.rounds))
    best = [0.0 if y.parent is None else math.inf for y in graphs]
    for r in range(settings.rounds):
        for i, y in enumerate(graphs):
            if y.parent is not None:
                for _ in range(settings.warmup if r == 0 else 0):
                    y.forward(clear_no_need_grad=True)
                times = []
                for _ in range(per_round):
                    t = time.perf_counter()
                    y.forward(clear_no_need_grad=True)
                    times.append(time.perf_counter() - t)
                best[i] = min(best[i], 1000.0 * statistics.median(times))
            if progress is not None:
                progress()
    return best


def graph_latency_ms(y: nn.Variable, settings: MeasureSettings) -> float:
    """``graphs_latency_ms`` of one graph."""
    return graphs_latency_ms([y], settings)[0]


def graph_memory(x: nn.Variable, y: nn.Variable) -> Dict[str, float]:
    """``{"param_bytes", "activation_bytes"}`` of the forward graph from ``x`` to ``y`` (see the module docstring)."""
    functions = []
    if y.parent is not None:
        y.visit(functions.append)  # post-order: every function after the functions it reads from
    last_use: Dict[nn.Variable, int] = {}
    params: Dict[nn.Variable, int] = {}
    for k, f in enumerate(functions):
        for v in f.inputs:
            if v.parent is None and v != x:
                params.setdefault(v, _bytes(v))
            else:
                last_use[v] = k
    live = _bytes(x)
    peak = live
    for k, f in enumerate(functions):
        live += sum(_bytes(v) for v in f.outputs)
        peak = max(peak, live)
        for v in set(f.inputs):
            if v in last_use and last_use[v] == k:
                live -= _bytes(v)
    return {"param_bytes": float(sum(params.values())), "activation_bytes": float(peak)}


def _bytes(v: nn.Variable) -> int:
    return int(v.size) * 4  # float32 everywhere in these graphs


def measure_module(
    module: Module, input_shape: Sequence[int], metrics: Sequence[str], settings: MeasureSettings | None = None
) -> Dict[str, float]:
    """Every metric of ``metrics`` for ``module`` on ``input_shape``: FLOPs and parameters per sample, latency
    and memory at ``settings.batch_size``."""
    return measure_modules([(module, input_shape)], metrics, settings)[0]


def measure_modules(
    items: Iterable[Tuple[Module, Sequence[int]]],
    metrics: Sequence[str],
    settings: MeasureSettings | None = None,
    progress: Callable[[], None] | None = None,
) -> List[Dict[str, float]]:
    """``measure_module`` of every ``(module, input shape)``, the latencies timed together in interleaved rounds.

    Each item's graphs are built when the item is drawn, so ``items`` may yield one module in several states
    (a superlayer with each candidate active in turn). ``progress`` is called once per graph and timing round.
    """
    settings = settings or MeasureSettings()
    outs: List[Dict[str, float]] = []
    graphs: List[nn.Variable] = []
    for module, input_shape in items:
        out: Dict[str, float] = {}
        if any(m in COUNTED_METRICS for m in metrics):
            out.update(count_graph(forward_graph(module, input_shape, 1)[1]))
        if any(m in MEASURED_METRICS for m in metrics):
            x, y = forward_graph(module, input_shape, settings.batch_size)
            if "memory" in metrics:
                mem = graph_memory(x, y)
                out["memory"] = mem["param_bytes"] + mem["activation_bytes"]
            if "latency" in metrics:
                graphs.append(y)
        outs.append(out)
    if "latency" in metrics:
        for out, ms in zip(outs, graphs_latency_ms(graphs, settings, progress)):
            out["latency"] = ms
    return [{m: out[m] for m in metrics} for out in outs]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(context: str = "cpu") -> Dict[str, object]:
    """What a measured cost depends on besides the network: nnabla version, context, CPU and threads."""
    return {
        "nnabla": nn.__version__,
        "context": context,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def device_name(metrics: Sequence[str], context: str = "cpu") -> str:
    """What a table's figures come from: the graph alone, or measurements on this machine."""
    if not any(m in MEASURED_METRICS for m in metrics):
        return "analytic (nnabla graph count)"
    return f"{cpu_model()} ({context}, nnabla {nn.__version__})"
