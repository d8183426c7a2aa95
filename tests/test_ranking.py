"""core/ranking.py: Kendall tau-b, Spearman (average ranks) and top-k overlap against known rankings, hand counts
and scipy, and their refusals of bad input."""

import math

import numpy as np
import pytest
from scipy import stats

from core.ranking import average_ranks, bootstrap_interval, kendall_tau, spearman, top_k, top_k_overlap


@pytest.mark.parametrize("fn", [kendall_tau, spearman])
def test_identical_order_is_1_and_reversed_order_is_minus_1(fn):
    a = [0.1, 0.5, 0.2, 0.9, 0.7]
    assert fn(a, a) == pytest.approx(1.0)
    assert fn(a, [2 * x + 3 for x in a]) == pytest.approx(1.0)  # a monotone transform keeps the order
    assert fn(a, [-x for x in a]) == pytest.approx(-1.0)


def test_kendall_tau_b_with_ties_by_hand():
    a, b = [1, 2, 2, 3], [1, 3, 2, 2]
    # the 6 pairs: (0,1) (0,2) (0,3) concordant, (1,2) tied in a, (1,3) discordant, (2,3) tied in b
    concordant, discordant, untied_a, untied_b = 3, 1, 5, 5
    expected = (concordant - discordant) / math.sqrt(untied_a * untied_b)
    assert kendall_tau(a, b) == pytest.approx(expected) == pytest.approx(0.4)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b, variant="b").statistic)


def test_spearman_with_ties_by_hand():
    a, b = [1, 2, 2, 3], [1, 3, 2, 2]
    ra, rb = [1, 2.5, 2.5, 4], [1, 4, 2.5, 2.5]
    np.testing.assert_allclose(average_ranks(a), ra)
    np.testing.assert_allclose(average_ranks(b), rb)
    # centred ranks (-1.5, 0, 0, 1.5) and (-1.5, 1.5, 0, 0): 2.25 / sqrt(4.5 * 4.5)
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1]) == pytest.approx(0.5)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_average_ranks_share_the_mean_of_their_places():
    np.testing.assert_allclose(average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]), [4, 1, 4, 2, 4])
    np.testing.assert_allclose(average_ranks([5, 5]), [1.5, 1.5])


def test_random_scorings_with_ties_agree_with_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 40):
        for _ in range(20):
            a = rng.integers(0, 5, n).astype(float)  # many ties
            b = a + rng.normal(0, 2, n).round()
            if np.ptp(a) == 0 or np.ptp(b) == 0:
                continue
            assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
            assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


@pytest.mark.parametrize("fn", [kendall_tau, spearman])
def test_a_constant_scoring_has_no_ranking(fn):
    assert math.isnan(fn([0.5, 0.5, 0.5], [1, 2, 3]))
    assert math.isnan(fn([1, 2, 3], [0.1, 0.1, 0.1]))


def test_top_k_overlap_by_hand():
    a = [0.9, 0.8, 0.7, 0.1, 0.2]  # top-2: items 0, 1; top-3: 0, 1, 2
    b = [0.1, 0.8, 0.2, 0.9, 0.7]  # top-2: items 3, 1; top-3: 3, 1, 4
    assert top_k_overlap(a, b, 2) == pytest.approx(0.5)
    assert top_k_overlap(a, b, 3) == pytest.approx(1 / 3)
    assert top_k_overlap(a, b, 5) == 1.0
    assert top_k_overlap(a, a, 1) == 1.0
    assert top_k_overlap(a, [-x for x in a], 2) == 0.0


def test_top_k_breaks_ties_by_position():
    assert top_k([1, 3, 3, 2], 2).tolist() == [1, 2]
    assert top_k([3, 3, 3], 2).tolist() == [0, 1]
    assert top_k_overlap([1, 1, 1], [0, 0, 5], 1) == 0.0  # a's "best" is item 0 by position


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([1, 2, 3], [1, 2], "different lengths (3 and 2)"),
        ([1], [1], "at least 2 items"),
        ([], [], "at least 2 items"),
        ([1, float("nan"), 3], [1, 2, 3], "first scoring has a non-finite value nan at index 1"),
        ([1, 2, 3], [1, 2, float("inf")], "second scoring has a non-finite value inf at index 2"),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]], "flat sequences"),
        (["a", "b"], [1, 2], "must be numbers"),
    ],
)
@pytest.mark.parametrize("fn", [kendall_tau, spearman, lambda a, b: top_k_overlap(a, b, 1)])
def test_bad_input_is_one_clear_error(fn, a, b, message):
    with pytest.raises(ValueError, match="^rankings: ") as err:
        fn(a, b)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("k", [0, 4, 1.5, True])
def test_top_k_overlap_refuses_a_k_outside_the_items(k):
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.3"):
        top_k_overlap([1, 2, 3], [3, 2, 1], k)


def test_bootstrap_interval_is_a_point_for_an_exact_ranking_and_wide_for_noise():
    same = list(range(12))
    assert bootstrap_interval(same, same) == (1.0, 1.0)
    assert bootstrap_interval(same, same[::-1], spearman) == (-1.0, -1.0)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(12), rng.standard_normal(12)
    low, high = bootstrap_interval(a, b, samples=500, seed=1)
    assert low < kendall_tau(a, b) < high and high - low > 0.5  # twelve unrelated scores: anything goes
    assert (low, high) == bootstrap_interval(a, b, samples=500, seed=1)
    assert all(np.isnan(bootstrap_interval([1.0, 1.0], [1.0, 2.0])))
    with pytest.raises(ValueError, match="samples >= 1"):
        bootstrap_interval(a, b, samples=0)
