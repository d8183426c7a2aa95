"""search_strategy/cost_levels.py: architectures spread over a cost range, one per level, uniform within its band."""

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from core.errors import ArchitectureError
from search_space.choices import Categorical, SearchSpaceChoices, arch_key
from search_space.cost_model import AdditiveCost
from search_strategy.cost_levels import cost_levels, spread_over_cost

CHOICES = SearchSpaceChoices({f"l{i}": Categorical((0, 1, 2)) for i in range(6)})
MODEL = AdditiveCost(10.0, {f"l{i}": {0: 0.0, 1: 1.0 + i, 2: 3.0 + 2 * i} for i in range(6)})
ALL = [dict(zip(CHOICES, values)) for values in itertools.product((0, 1, 2), repeat=6)]


def test_levels_are_evenly_spaced_and_include_both_ends():
    assert cost_levels(2.0, 10.0, 5) == [2.0, 4.0, 6.0, 8.0, 10.0]


@pytest.mark.parametrize("high", [MODEL.max_cost(), 40.0])
def test_one_distinct_architecture_per_level_within_half_a_spacing(high):
    low, n = MODEL.min_cost(), 7
    levels, archs = spread_over_cost(CHOICES, MODEL, low, high, n, np.random.default_rng(0))
    half = (high - low) / (2 * (n - 1))
    assert levels == pytest.approx(cost_levels(low, high, n))
    assert len({arch_key(a) for a in archs}) == n
    # every level is reached, the extreme ones too, which uniform draws from the whole space almost never come near
    for level, arch in zip(levels, archs):
        assert abs(MODEL.cost(arch) - level) <= half + 1e-9 and low <= MODEL.cost(arch) <= high


def test_a_pick_is_uniform_over_its_band():
    low, high, n = MODEL.min_cost(), MODEL.max_cost(), 5
    half = (high - low) / (2 * (n - 1))
    level = cost_levels(low, high, n)[3]  # above the median cost: reached through the negated model
    band = [arch_key(a) for a in ALL if abs(MODEL.cost(a) - level) <= half]
    picks = Counter(arch_key(spread_over_cost(CHOICES, MODEL, low, high, n, np.random.default_rng(s))[1][3])
                    for s in range(600))  # fmt: skip
    assert set(picks) <= set(band) and len(band) > 20
    counts = [picks.get(k, 0) for k in band]
    assert chisquare(counts).pvalue > 1e-3


def test_too_few_architectures_is_an_error():
    choices = SearchSpaceChoices({"a": Categorical((0, 1))})
    model = AdditiveCost(0.0, {"a": {0: 0.0, 1: 1.0}})
    with pytest.raises(ArchitectureError, match="no new architecture"):
        spread_over_cost(choices, model, 0.0, 1.0, 3, np.random.default_rng(0), tries=50)
