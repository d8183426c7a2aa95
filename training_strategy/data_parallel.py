"""Data-parallel steps (``train.workers``): a step's accumulated mini-batches run side by side on threads.

nnabla's CPU functions run on one core and release the GIL, so ``W`` copies of the step's loss graph on ``W``
threads share out the ``batch_size / mini_batch`` forward/backward passes of a step (on the demo's 8x8 workloads
two workers make a step 1.3-1.8x faster: a pass of half the batch costs more than half the time).
Each copy (a replica) is the same functions on the same weights: its parameters share the original's data arrays
(so the solver's update reaches every replica) but have their own gradient arrays, which are added to the
original's after the passes. The result is the step that running the passes one after another would give:

- gradients: the passes' gradients summed (the order of the sum aside, the same numbers);
- BatchNorm running statistics: every replica starts the step from the original's values; the passes of a step
  are dealt out in contiguous blocks, and the blocks' updates (``r <- d r + (1 - d) b`` per pass, ``d`` the decay)
  are composed in block order, which is exactly the sequential update;
- random functions (dropout, drop-path): the original graph draws from nnabla's global generator (seeded by the
  loop every step), each replica from seeds the loop's generator draws: deterministic and resumable, but not the
  numbers a sequential step would draw.

A copy is made by re-creating every function of the graph with its own arguments (any nnabla graph, whatever
built it); the leaves it meets are the step's input ``x`` and target ``t`` (fresh per replica), BatchNorm running
statistics (own arrays), leaves with gradients (shared data, own gradients) and constants (shared).
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List, Sequence, Tuple

import nnabla as nn
import nnabla.function as _functions
import numpy as np

from core.errors import ConfigError

#: the functions that update running statistics (inputs 3 and 4) in a training forward pass
_BATCH_NORMS = ("BatchNormalization", "FusedBatchNormalization")

Graph = Tuple[nn.Variable, nn.Variable, nn.Variable, nn.Variable]  # x, t, logits, loss


def _functions_of(loss: nn.Variable) -> list:
    found: list = []
    loss.visit(found.append)  # topological (forward) order
    return found


def _updates_statistics(f) -> bool:
    return f.info.type_name in _BATCH_NORMS and bool(f.info.args.get("batch_stat", False))


class _Replica:
    """One copy of a loss graph: its own inputs, gradients and running statistics, the original's weights."""

    def __init__(self, graph: Graph, functions: list, grad_leaves: Dict, seeds: Iterator[int]):
        x, t, logits, loss = graph
        self.x, self.t = nn.Variable(x.shape), nn.Variable(t.shape)
        mapping = {x: self.x, t: self.t}
        #: original running statistics -> [own copy, per-pass decay] (updated twice in a pass: decay^2)
        self.statistics: Dict[nn.Variable, List] = {}
        for f in functions:
            inputs = []
            for i, v in enumerate(f.inputs):
                if v not in mapping:
                    mapping[v] = self._leaf(v, f, i, grad_leaves)
                inputs.append(mapping[v])
            if _updates_statistics(f):
                for v in f.inputs[3:5]:
                    self.statistics[v][1] *= float(f.info.args["decay_rate"])
            args = dict(f.info.args)
            if "seed" in args:
                args["seed"] = next(seeds)
            try:
                function = getattr(_functions, f.info.type_name)(f.context, **args)
            except AttributeError:
                raise ConfigError(
                    f"workers: the loss graph holds a function that cannot be copied ({f.info.type_name}); "
                    "set train.workers / retrain.workers to 1"
                ) from None
            copies = function(*inputs, n_outputs=len(f.outputs), auto_forward=False)
            copies = copies if isinstance(copies, (list, tuple)) else [copies]
            for original, copy in zip(f.outputs, copies):
                copy.persistent, copy.recompute = original.persistent, original.recompute
                mapping[original] = copy
        self.logits, self.loss = mapping[logits], mapping[loss]
        self.grads = [(v, grad_leaves[v]) for v in mapping if v in grad_leaves]

    def _leaf(self, v: nn.Variable, f, index: int, grad_leaves: Dict) -> nn.Variable:
        if v.parent is not None:
            raise RuntimeError(f"{f.info.type_name}: input {index} was not produced earlier in the graph")
        if _updates_statistics(f) and index in (3, 4):
            own = nn.Variable(v.shape, need_grad=False)
            self.statistics[v] = [own, 1.0]
            return own
        if v.need_grad:
            if v not in grad_leaves:
                own = nn.Variable(v.shape, need_grad=True)
                own.data = v.data  # the same weights; the gradient array is the replica's own
                grad_leaves[v] = own
            return grad_leaves[v]
        return v  # a constant: read-only, shared

    def passes(self, batches, start: Dict, turn: threading.Event, next_turn: threading.Event) -> Tuple[float, int]:
        """Its block of passes from the original's running statistics at the step's start (``start``); then, in
        its turn (the blocks before it merged), its gradients and running statistics are merged into the
        original's."""
        try:
            for _, own in self.grads:
                own.grad.zero()
            for original, (own, _) in self.statistics.items():
                own.d = start[original]
            result = run_passes(self.x, self.t, self.logits, self.loss, batches)
            turn.wait()
            for original, own in self.grads:
                original.g += own.g
            for original, (own, decay) in self.statistics.items():
                # this block's passes applied after the blocks before it: r <- d^n (r - r_start) + r_block
                original.d = decay ** len(batches) * (original.d - start[original]) + own.d
            return result
        finally:
            next_turn.set()


class DataParallel:
    """Runs the passes of a step on ``workers`` threads: the original graph on the calling thread, replicas on
    the others; see the module's docstring for what the result is."""

    def __init__(self, workers: int):
        if workers < 2:
            raise ValueError(f"DataParallel needs at least 2 workers, got {workers}")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None  # started by the first step, ended by close()
        #: per replica: original leaf with a gradient -> the replica's leaf (data shared, gradient own)
        self._grad_leaves: List[Dict[nn.Variable, nn.Variable]] = [{} for _ in range(workers - 1)]
        self._graph: Graph | None = None  # the graph the replicas are copies of
        self._replicas: List[_Replica | None] = [None] * (workers - 1)
        #: of the graph last run: its functions, how many draw random numbers, its running statistics
        self._walked: Graph | None = None
        self._functions: list = []
        self._random = 0
        self._statistics: List[nn.Variable] = []

    def run(self, graph: Graph, batches: Sequence[Tuple[np.ndarray, np.ndarray]], rng: np.random.Generator):
        """Forward/backward of every batch, in contiguous blocks per worker; gradients and running statistics
        end in the original graph's leaves. Returns the summed loss and the number of correct predictions.

        Replicas are kept while the graph is, and made anew (by their own threads, while the original computes)
        when it changes, or every step if it draws random numbers (seeds from ``rng``, drawn here in order, so a
        resumed run draws what an uninterrupted one does)."""
        if graph is not self._walked:  # walked once per graph, not once per step
            self._walked, self._functions = graph, _functions_of(graph[3])
            self._random = sum("seed" in f.info.args for f in self._functions)
            self._statistics = [v for f in self._functions if _updates_statistics(f) for v in f.inputs[3:5]]
        functions, random = self._functions, self._random
        rebuild = graph is not self._graph or random > 0
        seeds = [[int(rng.integers(0, 2**31 - 1)) for _ in range(random)] for _ in self._replicas]
        # the running statistics before the original graph's passes update them
        start = {v: v.d.copy() for v in self._statistics}
        blocks = np.array_split(np.arange(len(batches)), self.workers)
        turns = [threading.Event() for _ in range(self.workers)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="data-parallel")

        def work(i: int, block) -> Tuple[float, int]:
            if rebuild:
                self._replicas[i] = _Replica(graph, functions, self._grad_leaves[i], iter(seeds[i]))
            return self._replicas[i].passes([batches[j] for j in block], start, turns[i], turns[i + 1])

        jobs = [self._pool.submit(work, i, block) for i, block in enumerate(blocks[1:]) if len(block)]
        try:
            results = [run_passes(*graph, [batches[j] for j in blocks[0]])]
        finally:
            turns[0].set()
        results += [job.result() for job in jobs]
        self._graph = graph  # its replicas are made (a failed copy is made again at the next step)
        return sum(r[0] for r in results), sum(r[1] for r in results)

    def close(self) -> None:
        """End the worker threads (a later step starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def run_passes(x, t, logits, loss, batches) -> Tuple[float, int]:
    """Forward/backward of ``batches`` one after another through one graph: the summed loss, correct predictions."""
    total, correct = 0.0, 0
    for images, labels in batches:
        x.d, t.d = images, labels
        loss.forward(clear_no_need_grad=True)
        loss.backward(clear_buffer=True)
        total += float(loss.d)
        correct += int((logits.d.argmax(axis=1) == labels[:, 0]).sum())
    return total, correct
