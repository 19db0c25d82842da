"""Dominance metrics against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectra.engine import (
    Spectrum,
    cumulative_energy,
    dominance_metrics,
    energy_share,
    normalized_spectrum,
    spectrum,
)
from spectra.update import ModuleUpdate


def _spec(values, shape=None, zeros=0) -> Spectrum:
    v = torch.tensor(values, dtype=torch.float64)
    return Spectrum(values=v, full_size=len(v) + zeros, structural_zeros=zeros, shape=shape)


def test_flat_spectrum():
    r = 8
    m = dominance_metrics(_spec([3.0] * r, shape=(100, 50), zeros=42))
    assert m["effective_rank"] == pytest.approx(r, rel=1e-12)
    assert m["stable_rank"] == pytest.approx(r, rel=1e-12)
    assert m["spectral_entropy"] == pytest.approx(1.0, rel=1e-12)
    assert m["top1_energy"] == pytest.approx(1 / r, rel=1e-12)
    assert m["top4_energy"] == pytest.approx(4 / r, rel=1e-12)
    assert m["topr_energy"] == pytest.approx(1.0, rel=1e-12)
    assert m["r_for_topr"] == r
    assert m["frobenius_norm"] == pytest.approx(3.0 * math.sqrt(r), rel=1e-12)
    assert m["spectral_norm"] == 3.0
    assert m["numerical_rank"] == r
    assert m["nonfinite"] is False


@pytest.mark.parametrize("values", [[5.0], [5.0, 0.0, 0.0, 0.0]])
def test_rank_one(values):
    m = dominance_metrics(_spec(values, shape=(10, len(values))))
    assert m["top1_energy"] == 1.0 and m["top4_energy"] == 1.0
    assert m["effective_rank"] == pytest.approx(1.0, abs=1e-15)
    assert m["stable_rank"] == 1.0
    assert m["spectral_entropy"] == 0.0
    assert m["numerical_rank"] == 1


def test_two_values_closed_form():
    m = dominance_metrics(_spec([2.0, 1.0], shape=(4, 2)), ks=(1,))
    p = np.array([2, 1]) / 3
    q = np.array([4, 1]) / 5
    assert m["top1_energy"] == pytest.approx(0.8, rel=1e-12)
    assert m["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert m["stable_rank"] == pytest.approx(1.25, rel=1e-12)
    assert m["spectral_entropy"] == pytest.approx(-(q * np.log(q)).sum() / math.log(2), rel=1e-12)
    assert m["frobenius_norm"] == pytest.approx(math.sqrt(5), rel=1e-12)
    assert "top4_energy" not in m


def test_topr_override_for_dense():
    m = dominance_metrics(_spec([4.0, 2.0, 1.0, 1.0]), r=2)
    assert m["r_for_topr"] == 2
    assert m["topr_energy"] == pytest.approx(20 / 22, rel=1e-12)


def test_numerical_rank_rule():
    # float32 rule: tol = σ1 · max(out, in) · eps32 = 8 · 1.19e-7 ≈ 9.5e-7.
    spec = Spectrum(torch.tensor([1.0, 1e-6, 1e-7]), full_size=3, structural_zeros=0, shape=(8, 3))
    assert dominance_metrics(spec)["numerical_rank"] == 2
    assert dominance_metrics(spec, dtype_eps=1e-9)["numerical_rank"] == 3
    no_shape = Spectrum(torch.tensor([1.0, 0.5]), full_size=2, structural_zeros=0)
    assert dominance_metrics(no_shape)["numerical_rank"] is None
    assert dominance_metrics(no_shape, shape=(2, 2))["numerical_rank"] == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numerical_rank_agrees_with_numpy(with_spectrum, dtype):
    a, _, _ = with_spectrum([1.0, 1e-2, 1e-4], 30, 12, seed=11)
    a = a.to(dtype)
    spec = spectrum(ModuleUpdate("m", (30, 12), dense=a))
    assert dominance_metrics(spec)["numerical_rank"] == np.linalg.matrix_rank(a.numpy()) == 3


def test_zero_update():
    m = dominance_metrics(_spec([0.0, 0.0, 0.0], shape=(5, 3)))
    assert m["top1_energy"] is None and m["top4_energy"] is None and m["topr_energy"] is None
    assert m["effective_rank"] == m["stable_rank"] == m["spectral_entropy"] == 0.0
    assert m["frobenius_norm"] == m["spectral_norm"] == 0.0
    assert m["numerical_rank"] == 0 and m["nonfinite"] is False
    empty = dominance_metrics(_spec([], shape=(5, 3), zeros=3))
    assert empty["numerical_rank"] == 0 and empty["r_for_topr"] == 0


def test_nonfinite_spectrum():
    m = dominance_metrics(_spec([float("nan"), 1.0], shape=(3, 2)))
    assert m["nonfinite"] is True
    assert all(v is None for k, v in m.items() if k not in ("nonfinite", "r_for_topr"))


def test_shared_normalizations():
    v = torch.tensor([1.0, 4.0, 2.0])  # unsorted on purpose
    assert torch.allclose(
        normalized_spectrum(v), torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    )
    assert torch.allclose(
        normalized_spectrum(v, "sum"), torch.tensor([4, 2, 1], dtype=torch.float64) / 7
    )
    assert torch.allclose(
        cumulative_energy(v), torch.tensor([16, 20, 21], dtype=torch.float64) / 21
    )
    assert energy_share(v, 2) == pytest.approx(20 / 21, rel=1e-12)
    assert energy_share(v, 99) == pytest.approx(1.0, rel=1e-12)
    assert energy_share(torch.zeros(3), 1) is None
    assert torch.equal(normalized_spectrum(torch.zeros(2)), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError):
        normalized_spectrum(v, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        energy_share(v, 0)
