"""Closest-match suggestions for error messages."""

import difflib
from typing import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate most similar to ``name`` (case-insensitive), or None."""
    cands = list(candidates)
    lowered = {c.lower(): c for c in cands}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean X?)' when a close candidate exists, else ''."""
    match = closest(name, candidates)
    return f" (did you mean {match}?)" if match else ""
