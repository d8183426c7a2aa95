"""Shared fixtures: a tiny ProxylessNAS configuration and data description for fast graph tests."""

import logging
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from nnabla.logger import logger as nnabla_logger  # noqa: E402

from core.registries import SEARCH_SPACES  # noqa: E402
from search_space.spec import DataInfo  # noqa: E402

nnabla_logger.setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def proxyless():
    """The registered ProxylessNAS space."""
    return SEARCH_SPACES.get("ProxylessNAS")


@pytest.fixture(scope="session")
def tiny_params(proxyless):
    """A narrow, shallow ProxylessNAS (6 searchable layers) that builds and runs in milliseconds."""
    return proxyless.Params(
        first_channels=8, first_mb_channels=8, stages=((8, 2, 1), (16, 2, 2), (16, 2, 1)), last_channels=32
    )


@pytest.fixture(scope="session")
def digits_info():
    """Digits-like data: 10 classes, 1 channel, 8x8."""
    return DataInfo(num_classes=10, in_channels=1, input_size=8)
