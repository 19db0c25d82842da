"""Pooled σ/σ_1 histogram on hand-built spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectra.engine import Spectrum, spectrum_histogram


def _spec(values, zeros: int) -> Spectrum:
    v = torch.tensor(values, dtype=torch.float64)
    return Spectrum(values=v, full_size=len(v) + zeros, structural_zeros=zeros)


def test_hand_built_counts():
    spectra = [
        _spec([4.0, 2.0, 1.0], zeros=2),  # ratios 1, .5, .25 + two structural zeros
        (torch.tensor([3.0, 3.0]), 0),  # ratios 1, 1 (tuple form)
        _spec([0.0, 0.0], zeros=5),  # zero update: skipped
        (np.array([1.0, float("nan")]), 0),  # non-finite: skipped
    ]
    counts, edges = spectrum_histogram(spectra, bins=4)
    assert np.allclose(edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]: zeros x2 | .25 | .5 | 1 x3
    assert counts.tolist() == [2, 1, 1, 3]
    assert counts.dtype == np.int64


def test_density_integrates_to_one():
    # 8 values: ratios 0, 0 (structural), .25, .5, 1 | .12, .82, 1
    spectra = [_spec([4.0, 2.0, 1.0], zeros=2), _spec([5.0, 4.1, 0.6], zeros=0)]
    dens, edges = spectrum_histogram(spectra, bins=10, density=True)
    assert float((dens * np.diff(edges)).sum()) == pytest.approx(1.0, abs=1e-12)
    expected = np.array([2, 1, 1, 0, 0, 1, 0, 0, 1, 2]) / 8 / 0.1
    assert np.allclose(dens, expected, rtol=1e-12, atol=0)


def test_empty_input_and_bad_bins():
    counts, _ = spectrum_histogram([], bins=3)
    assert counts.tolist() == [0, 0, 0]
    dens, _ = spectrum_histogram([], bins=3, density=True)
    assert dens.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        spectrum_histogram([], bins=0)
