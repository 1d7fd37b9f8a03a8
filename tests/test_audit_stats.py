"""The verdict statistics (distilkit.audit._stats) against values derived by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distilkit.audit._stats import (
    FAILS,
    HOLDS,
    OPEN,
    bootstrap_ci,
    mann_whitney_u,
    outcome_from_interval,
    outcome_from_test,
    paired_test,
    sign_test_p,
    two_proportion_p,
)


def test_mann_whitney_exact_small_samples():
    # x entirely below y: U = 0; of the C(6,3) = 20 equally likely rank sets only one gives U = 0 (and one
    # U = 9), so the two-sided exact p is 2/20
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result["method"] == "exact" and result["u"] == 0 and result["effect"] == -1
    assert result["p"] == pytest.approx(0.1)
    assert mann_whitney_u([1, 2, 3, 4], [5, 6, 7, 8, 9])["p"] == pytest.approx(2 / 126)
    swapped = mann_whitney_u([5, 6, 7, 8, 9], [1, 2, 3, 4])
    assert swapped["u"] == 20 and swapped["effect"] == 1 and swapped["p"] == pytest.approx(2 / 126)
    # U = 1 for n1 = n2 = 3: P(U <= 1) = 2/20 -> p = 0.2
    assert mann_whitney_u([1, 2, 4], [3, 5, 6])["p"] == pytest.approx(0.2)
    assert mann_whitney_u([1, 2, 5], [3, 4, 6])["p"] == pytest.approx(0.4)  # U = 2: P(U <= 2) = 4/20


def test_mann_whitney_ties_use_the_corrected_normal_approximation():
    # pooled 1,2,2,2,3,3,4,5: mid-ranks 1,3,3,3,5.5,5.5,7,8; x's rank sum 12.5 -> U = 2.5; mean 8;
    # variance 16/12 * (9 - (24 + 6)/56) = 11.2857; z = (5.5 - 0.5)/3.3594 = 1.4884 -> p = 0.1367 (as R's
    # wilcox.test(exact=FALSE, correct=TRUE))
    result = mann_whitney_u([1, 2, 2, 3], [2, 3, 4, 5])
    assert result["u"] == 2.5 and result["method"].startswith("normal")
    assert result["p"] == pytest.approx(0.1367, abs=5e-4)
    assert mann_whitney_u([1, 1, 1], [1, 1, 1])["p"] == 1.0  # all tied: no evidence


def test_mann_whitney_normal_approximation_is_close_to_exact():
    x = [0.1 * i for i in range(12)]
    y = [0.1 * i + 0.45 for i in range(12)]
    exact = mann_whitney_u(x, y)["p"]
    approx = mann_whitney_u(x, y, exact_limit=0)["p"]
    assert exact < 0.5 and abs(exact - approx) < 0.02


def test_bootstrap_interval():
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))
    # two values: resampled means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> the 95 % interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0])[1:] == pytest.approx((0.0, 1.0))
    values = torch.randn(40, generator=torch.Generator().manual_seed(3)).tolist()
    mean, lo, hi = bootstrap_ci(values, resamples=4000, seed=1)
    half = 1.96 * torch.tensor(values).std(correction=0).item() / math.sqrt(40)
    assert lo < mean < hi and (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)  # seeded


def test_outcomes():
    assert outcome_from_interval(-0.05, -0.01, -1, n=3) == HOLDS
    assert outcome_from_interval(0.01, 0.05, -1, n=3) == FAILS
    assert outcome_from_interval(-0.01, 0.02, -1, n=5) == OPEN
    assert outcome_from_interval(-0.05, -0.01, -1, n=2) == OPEN  # too few seeds for any verdict
    assert outcome_from_test(0.01, 0.4, +1) == HOLDS and outcome_from_test(0.01, -0.4, +1) == FAILS
    assert outcome_from_test(0.2, 0.4, +1) == OPEN
    test = paired_test("claim", "difference", [-0.02, -0.03, -0.01, -0.025], -1)
    assert test["outcome"] == HOLDS and test["ci"][1] < 0 and test["n"] == 4


def test_sign_and_two_proportion_tests():
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert sign_test_p(3, 6) == 1.0
    # 0.6 of 100 vs 0.4 of 100: pooled 0.5, spread sqrt(0.25 * 0.02) = 0.0707, z = 2.828 -> p = 0.00468
    assert two_proportion_p(0.6, 100, 0.4, 100) == pytest.approx(0.00468, abs=1e-5)
