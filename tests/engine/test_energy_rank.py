"""k90 / k95 / k99 (energy rank) and utilisation in the metrics: closed-form spectra, the
rounding at the boundary share, structural zeros, truncated spectra."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from spectra.engine.metrics import dominance_metrics, energy_rank
from spectra.engine.randomized import truncated_metrics
from spectra.engine.svd import Spectrum, spectrum
from spectra.update import ModuleUpdate


def _spec(values: list[float], full: int | None = None) -> Spectrum:
    full = len(values) if full is None else full
    return Spectrum(
        values=torch.tensor(values, dtype=torch.float64),
        full_size=full,
        structural_zeros=full - len(values),
        shape=(full + 3, full),
    )


def test_shares_exactly_at_tau_count_as_reached() -> None:
    """σ² = (0.5, 0.4, 0.09, 0.01): cumulative shares 0.5, 0.9, 0.99, 1 exactly; in floating
    point √0.4² etc. round, and the shares 0.9 and 0.99 may land an ulp below τ."""
    m = dominance_metrics(_spec([math.sqrt(v) for v in (0.5, 0.4, 0.09, 0.01)]))
    assert (m["k90"], m["k95"], m["k99"]) == (2, 3, 3)


def test_a_share_rounded_just_below_tau_still_reaches_it() -> None:
    """σ² = (0.9, 0.07, 0.03): the top-1 share is 0.9 exactly but computes as
    0.8999999999999999; k90 is 1, not 2."""
    m = dominance_metrics(_spec([math.sqrt(v) for v in (0.9, 0.07, 0.03)]))
    assert m["k90"] == 1


def test_flat_spectrum() -> None:
    """Ten equal values: share k/10, so k90 = 9, k95 = k99 = 10."""
    m = dominance_metrics(_spec([2.0] * 10))
    assert (m["k90"], m["k95"], m["k99"]) == (9, 10, 10)


def _exact_k(squares: list[int], tau: Fraction) -> int:
    total, run = sum(squares), 0
    for k, sq in enumerate(sorted(squares, reverse=True), start=1):
        run += sq
        if Fraction(run, total) >= tau:
            return k
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(25))
def test_against_exact_rational_arithmetic(seed: int) -> None:
    """σ² integers: k_τ by Fractions (no rounding at all) is the independent answer."""
    g = torch.Generator().manual_seed(seed)
    squares = torch.randint(1, 50, (int(torch.randint(3, 40, (1,), generator=g)),), generator=g)
    squares = squares.tolist()
    m = dominance_metrics(_spec(sorted((math.sqrt(s) for s in squares), reverse=True)))
    for key, tau in (
        ("k90", Fraction(9, 10)),
        ("k95", Fraction(19, 20)),
        ("k99", Fraction(99, 100)),
    ):
        assert m[key] == _exact_k(squares, tau), key


def test_structural_zeros_do_not_change_k_and_utilisation_is_erank_over_r() -> None:
    """A real factored rank-4 update of a 40 × 30 matrix: its 26 structural zeros add no
    energy; a flat rank-4 spectrum uses its rank fully (utilisation 1)."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(40, 4, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(30, 4, generator=g, dtype=torch.float64))
    update = ModuleUpdate(module="m", shape=(40, 30), left=u * 3.0, right=v.T.contiguous())
    spec = spectrum(update)
    assert spec.structural_zeros == 26
    m = dominance_metrics(spec, inner_rank=update.inner_rank)
    assert (m["k90"], m["k95"], m["k99"]) == (4, 4, 4)
    assert m["utilisation"] == pytest.approx(1.0, abs=1e-12)
    full = torch.cat([spec.values, torch.zeros(26, dtype=spec.values.dtype)])
    assert energy_rank(full, 0.9) == 4
    assert dominance_metrics(spec)["utilisation"] is None  # dense: no R


def test_zero_and_nonfinite_updates() -> None:
    zero = dominance_metrics(_spec([0.0, 0.0]), inner_rank=2)
    assert (zero["k90"], zero["utilisation"]) == (0, 0.0)
    bad = dominance_metrics(_spec([float("nan"), 1.0]), inner_rank=2)
    assert (bad["k90"], bad["utilisation"]) == (None, None)


def test_truncated_spectrum_knows_k_only_when_reached() -> None:
    """Top 2 of σ² = (8, 1, 1) (T = 10): shares 0.8, 0.9 → k90 = 2, k95 and k99 unknown."""
    top = torch.tensor([math.sqrt(8.0), 1.0], dtype=torch.float64)
    m = truncated_metrics(top, math.sqrt(10.0))
    assert (m["k90"], m["k95"], m["k99"], m["utilisation"]) == (2, None, None, None)
