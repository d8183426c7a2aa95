"""Criterion base: a loss builder over nnabla Variables; metrics stay outside the model."""

import abc
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nnabla as nn

from core.typed import check_ranges
from search_space.spec import DataInfo

if TYPE_CHECKING:
    from search_space.space import SearchSpace


@dataclass(frozen=True)
class CriterionSetup:
    """What a run tells its criterion before anything trains: data, search space, dataset, whether a supernet trains."""

    data: DataInfo
    space: "SearchSpace"
    space_params: Any
    dataset_name: str
    dataset_params: Any
    #: whether the run trains a supernet (the search agent) or only a standalone network (the evaluate agent)
    trains_supernet: bool
    logger: logging.Logger


class BaseCriterion(abc.ABC):
    """``criterion(logits, target, **context)`` returns a scalar loss Variable."""

    @dataclass(frozen=True)
    class Params:
        """No parameters."""

    def __init__(self, params: Any):
        check_ranges(params, "criterion")
        self.params = params

    def setup(self, run: CriterionSetup) -> None:
        """Check the params against the run and prepare what the loss needs (the agent calls it at construction,
        so a mismatch is a one-line error before anything is written or trained); default: nothing to check."""

    @abc.abstractmethod
    def __call__(self, logits: nn.Variable, target: nn.Variable, **context: Any) -> nn.Variable:
        """Build the loss graph for a batch (``target`` int (B, 1))."""
