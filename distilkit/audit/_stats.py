"""Small statistics for audit verdicts: paired bootstrap intervals, Mann–Whitney U, proportions.

Every Q1–Q3 verdict follows from one of these, never from a fixed threshold on a handful of runs.
Each test returns a plain dict (JSON-ready) that the report stores under the audit's ``tests`` and
the card shows next to the verdict:

    {"claim", "statistic", "estimate", "ci": [lo, hi] | None, "p": p | None, "n": ..., "method",
     "outcome": "holds" | "does not hold" | "inconclusive at this budget"}

No SciPy: the normal tail is ``math.erfc`` and the exact Mann–Whitney distribution is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive at this budget"
RESAMPLES = 2000
LEVEL = 0.95
MIN_PAIRED_SEEDS = 3  # with fewer, a percentile interval is just the range of the runs


def bootstrap_ci(values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, lower, upper): percentile bootstrap interval of the mean of ``values``.

    ``values`` are per-seed paired differences (distilled minus baseline trained with the same seed);
    the resampling is over seeds, with replacement, ``resamples`` times from a seeded generator; the
    bounds are the (1 − level)/2 and (1 + level)/2 quantiles (linear interpolation) of the resampled
    means. One value gives a zero-width interval.
    """
    x = torch.as_tensor(list(values), dtype=torch.float64)
    if x.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    picks = torch.randint(0, x.numel(), (resamples, x.numel()), generator=torch.Generator().manual_seed(seed))
    means = x[picks].mean(1)
    alpha = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return x.mean().item(), lo, hi


def outcome_from_interval(lo: float, hi: float, claimed_sign: int, n: int,
                          min_n: int = MIN_PAIRED_SEEDS) -> str:
    """The study's claim says the difference has sign ``claimed_sign`` (+1 or −1): it holds when the
    whole interval lies on that side of 0, does not hold when it lies wholly on the other side, and is
    inconclusive when it covers 0 or when fewer than ``min_n`` seeds were run."""
    if n < min_n:
        return OPEN
    if claimed_sign * lo > 0 and claimed_sign * hi > 0:
        return HOLDS
    if claimed_sign * lo < 0 and claimed_sign * hi < 0:
        return FAILS
    return OPEN


def paired_test(claim: str, statistic: str, differences: Sequence[float], claimed_sign: int, seed: int = 0,
                resamples: int = RESAMPLES, level: float = LEVEL, unit: str = "paired seeds") -> dict:
    """Bootstrap interval of the mean paired difference and the outcome for the study's claim
    (``unit`` names what is resampled: seeds, or e.g. distilled images)."""
    mean, lo, hi = bootstrap_ci(differences, resamples, level, seed)
    n = len(differences)
    return {"claim": claim, "statistic": statistic, "estimate": round(mean, 4), "ci": [round(lo, 4), round(hi, 4)],
            "p": None, "n": n, "unit": unit,
            "method": f"percentile bootstrap over {unit}, {resamples} resamples, {round(100 * level)}% "
                      f"(a verdict needs ≥ {MIN_PAIRED_SEEDS})",
            "outcome": outcome_from_interval(lo, hi, claimed_sign, n)}


def two_sample_test(claim: str, statistic: str, x: Sequence[float], y: Sequence[float], claimed_sign: int,
                    seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL, unit: str = "probes") -> dict:
    """Bootstrap interval of mean(x) − mean(y) for two independent samples (each resampled on its own,
    e.g. the Hutchinson probes of two trace estimates) and the outcome for the study's claim. A
    verdict needs at least :data:`MIN_PAIRED_SEEDS` values on each side."""
    a = torch.as_tensor(list(x), dtype=torch.float64)
    b = torch.as_tensor(list(y), dtype=torch.float64)
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError("two_sample_test needs at least one value on each side")
    g = torch.Generator().manual_seed(seed)
    diffs = a[torch.randint(0, a.numel(), (resamples, a.numel()), generator=g)].mean(1) - \
        b[torch.randint(0, b.numel(), (resamples, b.numel()), generator=g)].mean(1)
    alpha = (1 - level) / 2
    lo, hi = torch.quantile(diffs, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    n = min(a.numel(), b.numel())
    return {"claim": claim, "statistic": statistic, "estimate": round((a.mean() - b.mean()).item(), 4),
            "ci": [round(lo, 4), round(hi, 4)], "p": None, "n": f"{a.numel()} + {b.numel()}", "unit": unit,
            "method": f"percentile bootstrap over {unit}, each side resampled on its own, {resamples} resamples, "
                      f"{round(100 * level)}% (a verdict needs ≥ {MIN_PAIRED_SEEDS} per side)",
            "outcome": outcome_from_interval(lo, hi, claimed_sign, n)}


def _ranks(values: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Mid-ranks (1-based; tied values share their mean rank) and the sizes of the tie groups."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty_like(values, dtype=torch.float64)
    ties, i, n = [], 0, values.numel()
    while i < n:
        j = i
        while j + 1 < n and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _exact_u_cdf(n1: int, n2: int) -> list[float]:
    """P(U <= u) for u = 0..n1*n2 under the null (no ties): counts of rank sets, by recursion on sizes."""
    # counts[i][j][u]: arrangements of i x's and j y's with U_x = u (U_x counts y's below each x)
    counts = [[[0] * (n1 * n2 + 1) for _ in range(n2 + 1)] for _ in range(n1 + 1)]
    for j in range(n2 + 1):
        counts[0][j][0] = 1
    for i in range(1, n1 + 1):
        counts[i][0][0] = 1
        for j in range(1, n2 + 1):
            for u in range(i * j + 1):
                # the largest element is an x (it beats all j y's) or a y (it beats nothing)
                counts[i][j][u] = (counts[i - 1][j][u - j] if u >= j else 0) + counts[i][j - 1][u]
    total = math.comb(n1 + n2, n1)
    cdf, running = [], 0
    for c in counts[n1][n2]:
        running += c
        cdf.append(running / total)
    return cdf


def mann_whitney_u(x: Sequence[float], y: Sequence[float], exact_limit: int = 400) -> dict:
    """Two-sided Mann–Whitney U test of ``x`` against ``y``.

    Returns {"u": U of x (pairs x > y, ties count 1/2), "p", "method", "effect": rank-biserial
    correlation 2U/(n1 n2) − 1 in [−1, 1] (positive: x tends larger)}. Exact null distribution when
    there are no ties and n1·n2 ≤ ``exact_limit``; otherwise the normal approximation with the tie
    correction of the variance and a continuity correction of 1/2.
    """
    a = torch.as_tensor(list(x), dtype=torch.float64)
    b = torch.as_tensor(list(y), dtype=torch.float64)
    n1, n2 = a.numel(), b.numel()
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs two non-empty samples")
    ranks, ties = _ranks(torch.cat([a, b]))
    u = ranks[:n1].sum().item() - n1 * (n1 + 1) / 2
    effect = 2 * u / (n1 * n2) - 1
    if not ties and n1 * n2 <= exact_limit:
        cdf = _exact_u_cdf(n1, n2)
        low = round(min(u, n1 * n2 - u))
        p = min(1.0, 2 * cdf[low])
        method = "exact"
    else:
        n = n1 + n2
        mean = n1 * n2 / 2
        variance = n1 * n2 / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
        if variance <= 0:
            p = 1.0
        else:
            z = max(abs(u - mean) - 0.5, 0.0) / math.sqrt(variance)
            p = math.erfc(z / math.sqrt(2))
        method = "normal approximation, tie-corrected, continuity-corrected"
    return {"u": u, "p": p, "method": method, "effect": effect}


def outcome_from_test(p: float, effect: float, claimed_sign: int, alpha: float = 0.05) -> str:
    """A test's outcome for a claimed direction: significant in that direction holds, significant the
    other way does not hold, otherwise inconclusive."""
    if p >= alpha or effect == 0:
        return OPEN
    return HOLDS if effect * claimed_sign > 0 else FAILS


def two_proportion_p(a: float, n_a: int, b: float, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test for shares ``a`` of ``n_a`` and ``b`` of ``n_b``."""
    pooled = (a * n_a + b * n_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return 1.0 if spread == 0 else math.erfc(abs(a - b) / spread / math.sqrt(2))


def sign_test_p(successes: int, trials: int) -> float:
    """Two-sided exact binomial sign test of ``successes`` out of ``trials`` against p = 1/2."""
    if trials == 0:
        return 1.0
    tail = min(successes, trials - successes)
    return min(1.0, 2 * sum(math.comb(trials, i) for i in range(tail + 1)) / 2**trials)


def describe(test: dict) -> str:
    """One clause for a verdict sentence: the estimate with its interval or p-value, and the outcome."""
    if test.get("ci") is not None:
        lo, hi = test["ci"]
        unit = test.get("unit", "paired seeds")
        evidence = f"{test['estimate']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], {test['n']} {unit}"
    else:
        evidence = f"p = {test['p']:.2g}, n = {test['n']}"
    return f"{test['statistic']} {evidence}: {test['outcome']}"
