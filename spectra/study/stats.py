"""Statistics over seeds: mean ± sd, Student-t intervals, paired differences, verdicts.

Every number of the study is measured once per seed. For one method it is summarised as the
mean, the sample standard deviation and a 95 % confidence interval of the mean; for a
comparison of two methods as the paired per-seed difference d_s = x_s(A) − x_s(B) (both
trained from seed s: same data split, batch order and head initialisation) with its mean and
interval. Pairing removes what the two runs of a seed share.

**choice**: the interval is Student's t, mean ± t_{1−α/2, n−1} · sd / √n. With the 3–5 seeds a
study can afford, a bootstrap percentile interval is too narrow (with n = 3 seeds it has only
10 distinct resample means, and it ignores the n/(n−1) variance correction), while the t
interval is exact for normal per-seed values and robust to mild departures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.special import betaincinv

Verdict = Literal["holds", "does not hold", "undecided"]


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom.

    For p > 1/2: t = √(df · (1/x − 1)), x = I⁻¹_{2(1−p)}(df/2, 1/2), the inverse regularized
    incomplete beta function (the t CDF is 1 − I_{df/(df+t²)}(df/2, 1/2) / 2); symmetric below
    1/2. Closed forms: df = 1, t = tan(π(p − 1/2)); df = 2, t = (2p − 1) / √(2p(1 − p)).

    Raises:
        ValueError: p not in (0, 1) or df < 1.
    """
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    tail = min(p, 1.0 - p)
    x = float(betaincinv(df / 2.0, 0.5, 2.0 * tail))
    t = math.sqrt(df * (1.0 / x - 1.0))
    return t if p > 0.5 else -t


@dataclass(frozen=True)
class Estimate:
    """One number over seeds.

    Attributes:
        values: The per-seed values, in seed order.
        mean: Their mean.
        sd: Sample standard deviation (n − 1 in the denominator); None for one seed.
        ci: (low, high), the ``level`` t interval of the mean; None for one seed.
        level: Confidence level of ``ci``.
    """

    values: tuple[float, ...]
    mean: float
    sd: float | None
    ci: tuple[float, float] | None
    level: float

    @property
    def n(self) -> int:
        """Number of seeds."""
        return len(self.values)

    def to_json(self) -> dict[str, object]:
        """Plain JSON: values, n, mean, sd, ci_low, ci_high, level."""
        return {
            "values": list(self.values),
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "ci_low": None if self.ci is None else self.ci[0],
            "ci_high": None if self.ci is None else self.ci[1],
            "level": self.level,
        }


def estimate(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean, sd and the t interval mean ± t_{(1+level)/2, n−1} · sd / √n.

    Args:
        values: One finite value per seed (at least one).
        level: Confidence level in (0, 1).

    Raises:
        ValueError: No values, a non-finite value, or ``level`` outside (0, 1).
    """
    xs = tuple(float(v) for v in values)
    if not xs or not all(math.isfinite(v) for v in xs):
        raise ValueError(f"need at least one value, all finite; got {list(xs)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(xs, mean, None, None, level)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in xs) / (n - 1))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)
    return Estimate(xs, mean, sd, (mean - half, mean + half), level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Estimate:
    """:func:`estimate` of the per-seed differences d_s = a_s − b_s.

    Raises:
        ValueError: ``a`` and ``b`` differ in length (they must hold the same seeds, in order).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds: {len(a)} vs {len(b)} values")
    return estimate([float(x) - float(y) for x, y in zip(a, b, strict=True)], level)


def verdict(difference: Estimate, claim: Literal["greater", "less"]) -> Verdict:
    """Whether "A > B" (``greater``) or "A < B" (``less``) holds, from d = A − B.

    ``holds`` when the interval of d lies entirely on the claimed side of 0, ``does not hold``
    when it lies entirely on the other side, ``undecided`` when it contains 0 (or there is
    only one seed, hence no interval).
    """
    if difference.ci is None:
        return "undecided"
    low, high = difference.ci
    sign = 1.0 if claim == "greater" else -1.0
    if min(sign * low, sign * high) > 0.0:
        return "holds"
    if max(sign * low, sign * high) < 0.0:
        return "does not hold"
    return "undecided"


def verdict_of_flags(flags: Sequence[bool]) -> Verdict:
    """A yes/no property measured per seed: ``holds`` when true for every seed, ``does not
    hold`` when false for every seed, ``undecided`` when the seeds disagree (or none)."""
    if flags and all(flags):
        return "holds"
    if flags and not any(flags):
        return "does not hold"
    return "undecided"
