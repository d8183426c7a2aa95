"""Criterion base: a loss builder over nnabla Variables; metrics stay outside the model."""

import abc
from dataclasses import dataclass
from typing import Any

import nnabla as nn

from core.typed import check_ranges


class BaseCriterion(abc.ABC):
    """``criterion(logits, target, **context)`` returns a scalar loss Variable."""

    @dataclass(frozen=True)
    class Params:
        """No parameters."""

    def __init__(self, params: Any):
        check_ranges(params, "criterion")
        self.params = params

    @abc.abstractmethod
    def __call__(self, logits: nn.Variable, target: nn.Variable, **context: Any) -> nn.Variable:
        """Build the loss graph for a batch (``target`` int (B, 1))."""
