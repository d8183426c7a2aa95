"""Retrain a fixed list of architectures from scratch, one after another, resumably (rank quality, random baseline).

Architecture ``i`` of list ``name`` trains as the search agent retrains (``build_retrain`` + ``retrain_and_test``,
without export) under its own checkpoint tag ``<name>_<i>``, so a run killed mid-training continues from that
architecture's last epoch. Every architecture's generator (fresh weights, data order) is spawned before any of
them trains: a result depends on the list and the run's seed only, not on what an interrupted run had finished.
Each finished result is committed to ``checkpoints/<name>_retrained.json``, rewritten atomically after the result
is known (the convention of ``core/run_state.py``: the record is written last); a resume takes the recorded
results and continues with the next architecture. A record of another list or other retrain settings (e.g. more
``retrain.epochs``) is set aside; each architecture then continues from its own checkpoint.
"""

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from core.checkpoint import write_json
from core.errors import CheckpointError
from core.seed import spawn_rng
from search_space.choices import Arch, encode_arch

if TYPE_CHECKING:  # the agent module imports this one
    from agent.base import BaseAgent

FORMAT = 1
#: retrain settings that change no result (a resume may change them without setting the record aside)
_NO_RESULT_KEYS = ("log_every", "checkpoint_every")


def record_path(checkpoint_dir: str, name: str) -> str:
    """Where list ``name`` records its finished retrains."""
    return os.path.join(checkpoint_dir, f"{name}_retrained.json")


def read_record(path: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``(identity, results)`` of a record file; damage is one CheckpointError line."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: damaged retrain record ({type(err).__name__})") from None
    try:
        if record["format"] != FORMAT:
            raise ValueError(f"format {record['format']!r}, expected {FORMAT}")
        identity, results = dict(record["identity"]), [dict(r) for r in record["results"]]
        for i, r in enumerate(results):
            if r["index"] != i or not isinstance(r["test_accuracy"], (int, float)):
                raise ValueError(f"result {i} is not the {i}-th architecture's")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged retrain record ({type(err).__name__}: {err})") from None
    return identity, results


def check_record(checkpoint_dir: str, name: str) -> None:
    """On resume, refuse a damaged record of list ``name`` before anything runs (a missing one is fine)."""
    path = record_path(checkpoint_dir, name)
    if os.path.isfile(path):
        read_record(path)


class RetrainList:
    """The from-scratch retrains of ``archs`` (in order) for ``agent``, recorded under ``name``.

    ``rng`` is the list's own generator (spawned from the run's by the caller); one child per architecture is
    drawn from it here.
    """

    def __init__(self, agent: "BaseAgent", name: str, archs: Sequence[Arch], rng: np.random.Generator):
        self.agent, self.name = agent, name
        self.archs = [dict(a) for a in archs]
        self.rngs = [spawn_rng(rng) for _ in self.archs]
        self.path = record_path(agent.io.checkpoint_dir, name)
        retrain = {k: v for k, v in agent.config.to_dict()["retrain"].items() if k not in _NO_RESULT_KEYS}
        self.identity = {"archs": [json.loads(encode_arch(a)) for a in self.archs], "retrain": retrain}

    def recorded(self) -> List[Dict[str, Any]]:
        """The results a resumed run already has: the record's, if it is of this list and these settings."""
        if not (self.agent.resume and os.path.isfile(self.path)):
            return []
        identity, results = read_record(self.path)
        if identity != self.identity or len(results) > len(self.archs):
            self.agent.logger.info("[%s] set aside a record of other architectures or retrain settings", self.name)
            return []
        return results

    def run(self) -> List[Dict[str, Any]]:
        """Retrain and test every architecture not yet recorded; returns every result, in list order.

        A result is ``retrain_and_test``'s (``arch``, the measured costs, ``test_accuracy``, ``test_loss``,
        ``final_train``) plus ``index``.
        """
        agent, results = self.agent, self.recorded()
        if results:
            agent.logger.info("[%s] %d of %d retrains recorded; continuing", self.name, len(results), len(self.archs))
        bar = tqdm(
            total=len(self.archs),
            initial=len(results),
            desc=f"retrain {self.name}",
            unit="arch",
            disable=not agent.io.progress,
            dynamic_ncols=True,
            leave=False,
        )
        try:
            for i in range(len(results), len(self.archs)):
                arch = self.archs[i]
                agent.logger.info("[%s] architecture %d of %d", self.name, i + 1, len(self.archs))
                loop = agent.build_retrain(arch, tag=f"{self.name}_{i}", rng=self.rngs[i])
                out = agent.retrain_and_test(arch, loop, export=False)
                results.append({"index": i, **json.loads(json.dumps({**out, "arch": self.identity["archs"][i]}))})
                write_json(self.path, {"format": FORMAT, "identity": self.identity, "results": results})
                bar.update(1)
        finally:
            bar.close()
        return results
