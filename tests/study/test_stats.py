"""The study's statistics against closed forms and scipy.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from spectra.study.stats import (
    Estimate,
    estimate,
    paired_difference,
    t_quantile,
    verdict,
    verdict_of_flags,
)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995, 0.025, 0.1])
def test_t_quantile_closed_forms_for_one_and_two_degrees_of_freedom(p: float) -> None:
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 30, 200])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.975, 0.999, 0.01])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(scipy.stats.t.ppf(p, df), rel=1e-10, abs=1e-12)


def test_t_quantile_refuses_bad_arguments() -> None:
    for p, df in ((0.0, 3), (1.0, 3), (0.5, 0)):
        with pytest.raises(ValueError, match="need 0 < p < 1"):
            t_quantile(p, df)


def test_estimate_of_one_two_three() -> None:
    e = estimate([1.0, 2.0, 3.0])
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t_{0.975, 2}, closed form
    half = t * 1.0 / math.sqrt(3)
    assert (e.mean, e.sd, e.n) == (2.0, 1.0, 3)
    assert e.ci == pytest.approx((2.0 - half, 2.0 + half), rel=1e-12)
    assert e.to_json()["ci_low"] == pytest.approx(2.0 - half)


def test_estimate_of_one_seed_has_no_interval() -> None:
    e = estimate([0.3])
    assert (e.mean, e.sd, e.ci) == (0.3, None, None)
    assert verdict(e, "greater") == "undecided"


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf]])
def test_estimate_refuses_empty_or_non_finite(values) -> None:
    with pytest.raises(ValueError, match="finite"):
        estimate(values)


def test_paired_difference_removes_what_the_seeds_share() -> None:
    # seed effects of ±10 dwarf the constant difference 0.5: unpaired, the intervals overlap;
    # paired, every difference is exactly 0.5 and the interval is the point
    shared = np.array([10.0, -7.0, 3.0, -12.0, 6.0])
    a, b = shared + 0.5, shared
    d = paired_difference(a.tolist(), b.tolist())
    assert d.values == pytest.approx((0.5,) * 5)
    assert d.sd == pytest.approx(0.0, abs=1e-12)
    assert d.ci == pytest.approx((0.5, 0.5), abs=1e-12)
    assert verdict(d, "greater") == "holds" and verdict(d, "less") == "does not hold"
    ea, eb = estimate(a.tolist()), estimate(b.tolist())
    assert ea.ci[0] < eb.ci[1]  # unpaired, undecidable


def test_paired_difference_interval_by_hand() -> None:
    a, b = [0.40, 0.35, 0.45, 0.38], [0.55, 0.52, 0.57, 0.50]
    d = [x - y for x, y in zip(a, b, strict=True)]  # -0.15, -0.17, -0.12, -0.12
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    half = scipy.stats.t.ppf(0.975, 3) * sd / 2
    e = paired_difference(a, b)
    assert e.mean == pytest.approx(mean)
    assert e.ci == pytest.approx((mean - half, mean + half))
    assert verdict(e, "less") == "holds"


def test_paired_difference_needs_the_same_seeds() -> None:
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


def test_t_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    # 4000 samples of 3 normal values: coverage is exactly 95 % for the t interval (binomial
    # sd 0.35 %); a normal-quantile interval (1.96) would cover only ~86 %
    rng = np.random.default_rng(7)
    samples = rng.normal(1.0, 2.0, size=(4000, 3))
    covered = 0
    for row in samples:
        lo, hi = estimate(row.tolist()).ci
        covered += lo <= 1.0 <= hi
    assert 0.935 <= covered / len(samples) <= 0.965


def _interval(lo: float, hi: float) -> Estimate:
    return Estimate(values=(lo, hi), mean=(lo + hi) / 2, sd=1.0, ci=(lo, hi), level=0.95)


@pytest.mark.parametrize(
    ("lo", "hi", "claim", "expected"),
    [
        (0.1, 0.3, "greater", "holds"),
        (0.1, 0.3, "less", "does not hold"),
        (-0.3, -0.1, "less", "holds"),
        (-0.3, -0.1, "greater", "does not hold"),
        (-0.1, 0.3, "greater", "undecided"),
        (0.0, 0.3, "greater", "undecided"),  # touching 0 is not excluding it
    ],
)
def test_verdict_reads_the_interval(lo, hi, claim, expected) -> None:
    assert verdict(_interval(lo, hi), claim) == expected


def test_verdict_of_flags() -> None:
    assert verdict_of_flags([True, True, True]) == "holds"
    assert verdict_of_flags([False, False]) == "does not hold"
    assert verdict_of_flags([True, False]) == "undecided"
    assert verdict_of_flags([]) == "undecided"
