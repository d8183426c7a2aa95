"""The search journal: every evaluation of a search as one JSON line, so a killed search resumes mid-way.

Search strategies are deterministic given their injected rng and the metrics they are told, so a resumed
search re-runs the strategy from its start and the journal answers the evaluations it already made (in
the same order) instead of the supernet: the population, history and generation come back exactly, with
no strategy having to serialise itself. The first line identifies the trained supernet and the search
settings; a journal of another supernet (e.g. trained longer since) is set aside and the search restarts.
"""

import json
import os
from typing import Any, Callable, Dict, List, Mapping

from core.checkpoint import atomic_path
from core.errors import CheckpointError
from search_space.choices import Arch, arch_key

Evaluate = Callable[[Arch], Mapping[str, float]]


class SearchJournal:
    """Append-only evaluation log at ``path`` keyed by ``identity`` (plain JSON data)."""

    def __init__(self, path: str, identity: Mapping[str, Any]):
        self.path, self.identity = path, json.loads(json.dumps(identity))
        self.replay: List[Dict[str, Any]] = []
        self.replayed = 0

    @staticmethod
    def read(path: str) -> "tuple[Dict[str, Any] | None, List[Dict[str, Any]]]":
        """``(identity, entries)`` of a journal file: a line cut off by a kill is dropped, other damage is an error."""
        try:
            with open(path, encoding="utf-8") as f:
                complete = f.read().split("\n")[:-1]  # a whole line ends with "\n"; the rest is a cut-off write
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: unreadable search journal ({type(err).__name__})") from None
        if not complete:
            return None, []
        identity: Dict[str, Any] | None = None
        entries: List[Dict[str, Any]] = []
        for number, line in enumerate(complete, 1):
            try:
                record = json.loads(line)
                if number == 1:
                    identity = record["identity"]
                else:
                    entries.append({"arch": record["arch"], "metrics": record["metrics"]})
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                reason = err.msg if isinstance(err, json.JSONDecodeError) else f"{type(err).__name__}: {err}"
                raise CheckpointError(f"{path}: damaged search journal (line {number}: {reason})") from None
        return identity, entries

    def open(self, resume: bool) -> str:
        """Load the entries to replay when resuming a search of the same supernet; returns what happened."""
        if resume and os.path.isfile(self.path):
            identity, entries = self.read(self.path)
            if identity == self.identity:
                self.replay = entries
                self._rewrite()
                return f"replaying {len(entries)} journaled evaluations"
            note = "set aside a search journal of another supernet or search setting; the search restarts"
        else:
            note = "new search journal"
        self.replay = []
        self._rewrite()
        return note

    def _rewrite(self) -> None:
        """Start the file afresh with the identity and the entries to replay (drops a cut-off last line)."""
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps({"identity": self.identity}) + "\n")
                for e in self.replay:
                    f.write(json.dumps(e) + "\n")

    def wrap(self, evaluate: Evaluate) -> Evaluate:
        """``evaluate`` that answers from the journal while it lasts, then evaluates and appends."""

        def journaled(arch: Arch) -> Mapping[str, float]:
            if self.replayed < len(self.replay):
                entry = self.replay[self.replayed]
                if arch_key(entry["arch"]) != arch_key(arch):
                    raise CheckpointError(
                        f"{self.path}: evaluation {self.replayed + 1} of the resumed search is {dict(arch)} but the "
                        f"journal holds {entry['arch']} (a non-deterministic strategy?); delete the journal to restart"
                    )
                self.replayed += 1
                return entry["metrics"]
            metrics = {str(k): float(v) for k, v in evaluate(arch).items()}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"arch": dict(arch), "metrics": metrics}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return metrics

        return journaled
