"""The study's per-arm numbers and shape tests on hand-built results and histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectra.engine import Spectrum
from spectra.engine.histogram import log_spectrum_histogram
from spectra.study.extract import (
    HIST_BINS,
    arm_numbers,
    bin_centers_linear,
    bin_centers_log,
    ends,
    phi_at,
    shape,
)


def _row(label: str, values: list[float], zeros: int, top1: float, erank: float) -> dict:
    return {
        "module": "m",
        "label": label,
        "singular_values": values,
        "structural_zeros": zeros,
        "metrics": {"top1_energy": top1, "effective_rank": erank},
    }


def _sim(a: str, b: str, side: str, grid: list[list[float]]) -> dict:
    return {"module": "m", "a": a, "b": b, "side": side, "phi": grid}


def test_arm_numbers_means_k90_and_phi_at_the_rank() -> None:
    grid3 = [[0.9, 0.5, 0.4], [0.5, 0.6, 0.3], [0.4, 0.3, 0.2]]
    result = {
        "modules": [
            # energies 9, 4, 1 of 14: cumulative 0.64, 0.93 -> k90 = 2
            _row("lora", [3.0, 2.0, 1.0], 5, 0.6, 2.0),
            # energies 1, 1, 1, 1: k90 = 4 (0.75 < 0.9 <= 1)
            _row("lora", [1.0, 1.0, 1.0, 1.0], 4, 0.2, 4.0),
            {**_row("lora", [1.0], 0, 0.9, 1.0), "nonfinite": True},  # left out
            _row("full", [5.0, 1.0], 0, 0.96, 1.5),
        ],
        "similarity": [
            _sim("lora", "full", "left", grid3),
            _sim("full", "lora", "left", [[0.7, 0.1], [0.1, 0.5]]),  # grid cut at 2
            _sim("lora", "full", "right", grid3),
            _sim("lora", "other", "left", [[1.0]]),  # another pair: ignored
        ],
    }
    n = arm_numbers(result, "lora", rank=3)
    assert n["modules"] == 2
    assert n["top1_energy"] == pytest.approx(0.4)
    assert n["effective_rank"] == pytest.approx(3.0)
    assert n["k90"] == pytest.approx(3.0)  # mean of 2 and 4
    assert n["phi_left"] == pytest.approx((0.2 + 0.5) / 2)  # φ(3,3) and, cut, φ(2,2)
    assert n["phi_right"] == pytest.approx(0.2)
    assert sum(n["histogram"]["linear"]) == (3 + 5) + (4 + 4)  # full spectra, zeros included
    assert phi_at(result, "lora", "full", "left", 1) == pytest.approx((0.9 + 0.7) / 2)
    assert "phi_left" not in arm_numbers(result, "full", rank=None)


def test_log_histogram_places_decades() -> None:
    values = torch.tensor([1.0, 0.1, 0.1, 0.01, 1e-6, 0.0], dtype=torch.float64)
    counts, edges, below = log_spectrum_histogram(
        [Spectrum(values=values, full_size=9, structural_zeros=3)], bins=4, decades=4.0
    )
    assert np.allclose(edges, [-4.0, -3.0, -2.0, -1.0, 0.0])
    # log10: 0 -> last bin; -1 (x2) -> bin [-1, 0); -2 -> bin [-2, -1); 1e-6 below; zeros none
    assert counts.tolist() == [0, 0, 1, 3]
    assert below == 1


def test_shape_bell_and_monotone() -> None:
    centers = np.arange(5.0)
    assert shape([1, 4, 9, 4, 1], centers) == {"mode": 2.0, "mode_bin": 2, "bell": True}
    assert shape([9, 5, 3, 2, 1], centers)["bell"] is False  # falls from the first bin
    assert shape([6, 9, 5, 2, 1], centers)["bell"] is False  # first bin > half the mode
    assert shape([1, 2, 3, 4, 9], centers)["mode"] == 4.0


def test_ends_shares() -> None:
    counts = [0] * HIST_BINS
    counts[0], counts[5], counts[HIST_BINS - 1] = 90, 4, 6  # zeros, one middle, top end
    e = ends(counts)
    assert e == pytest.approx({"low": 0.9, "middle": 0.04, "high": 0.06})
    assert all(math.isnan(v) for v in ends([0] * HIST_BINS).values())


def test_bin_centers() -> None:
    assert bin_centers_linear()[0] == pytest.approx(0.5 / HIST_BINS)
    assert bin_centers_log()[-1] == pytest.approx(-0.5 * 4.0 / HIST_BINS)
