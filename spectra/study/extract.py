"""The study's numbers of one trained update, read from an analysis result.

Per arm and seed: the means over the compared modules of the top-1 energy share, the
effective rank and k90 (the smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ 0.9,
:func:`spectra.engine.metrics.energy_rank`); φ(k, k) against full fine-tuning on each side at
k = the arm's total rank (cut to the subspaces both updates have); and the pooled histograms
of its spectrum on the linear σ/σ₁ axis (structural zeros in the first bin) and on the log
axis log10(σ/σ₁) (non-zero values), from which the shape claims are read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from spectra.engine.histogram import log_spectrum_histogram, spectrum_histogram
from spectra.engine.metrics import energy_rank

HIST_BINS = 40  # bins of both histograms
LOG_DECADES = 4.0  # the log axis spans log10(σ/σ₁) ∈ [-4, 0]
HIGH_END = 0.5  # "top end" of the linear axis: σ/σ₁ ≥ 0.5
REFERENCE = "full"  # φ is measured against this arm


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return math.fsum(vals) / len(vals) if vals else None


def _rows(result: dict[str, Any], label: str) -> list[dict[str, Any]]:
    return [
        r
        for r in result["modules"]
        if r["label"] == label and not r.get("nonfinite") and r.get("metrics")
    ]


def phi_at(result: dict[str, Any], a: str, b: str, side: str, k: int) -> float | None:
    """Mean over modules of φ(k, k) between ``a`` and ``b`` on ``side``.

    Per module k is cut to the grid the analysis computed (min(top_k, numerical ranks)).
    """
    values = []
    for s in result["similarity"]:
        if s["side"] != side or {s["a"], s["b"]} != {a, b}:
            continue
        grid = s["phi"]
        kk = min(k, len(grid), len(grid[0]) if grid else 0)
        values.append(grid[kk - 1][kk - 1] if kk >= 1 else None)
    return _mean(values)


def histograms(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled spectrum histograms of ``rows`` on both axes (counts, JSON-able)."""
    pairs = [
        (torch.tensor(r["singular_values"], dtype=torch.float64), int(r.get("structural_zeros", 0)))
        for r in rows
    ]
    linear, _ = spectrum_histogram(pairs, bins=HIST_BINS)
    log, _, below = log_spectrum_histogram(pairs, bins=HIST_BINS, decades=LOG_DECADES)
    return {"linear": linear.tolist(), "log": log.tolist(), "log_below": below}


def arm_numbers(result: dict[str, Any], label: str, rank: int | None) -> dict[str, Any]:
    """The study's numbers of one label of ``result`` (see the module docstring).

    Args:
        result: An analysis result holding ``label`` and, for φ, ``full``.
        label: The arm's label.
        rank: Its total adapter rank (k of φ); None for full fine-tuning itself.
    """
    rows = _rows(result, label)
    k90 = [energy_rank(torch.tensor(r["singular_values"], dtype=torch.float64), 0.9) for r in rows]
    out: dict[str, Any] = {
        "modules": len(rows),
        "top1_energy": _mean([r["metrics"].get("top1_energy") for r in rows]),
        "effective_rank": _mean([r["metrics"].get("effective_rank") for r in rows]),
        "k90": _mean([float(k) for k in k90 if k > 0]),
        "histogram": histograms(rows),
    }
    if rank is not None:
        out["phi_left"] = phi_at(result, label, REFERENCE, "left", rank)
        out["phi_right"] = phi_at(result, label, REFERENCE, "right", rank)
    return out


def bin_centers_linear() -> np.ndarray:
    """Centers of the linear-axis bins (σ/σ₁)."""
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    return (edges[:-1] + edges[1:]) / 2


def bin_centers_log() -> np.ndarray:
    """Centers of the log-axis bins (log10(σ/σ₁))."""
    edges = np.linspace(-LOG_DECADES, 0.0, HIST_BINS + 1)
    return (edges[:-1] + edges[1:]) / 2


def shape(counts: Sequence[int], centers: np.ndarray) -> dict[str, Any]:
    """Where a histogram's mass lies, and whether it is bell-shaped.

    **Bell-shaped** (the study's definition): the mode (the fullest bin) is an interior bin,
    and both end bins hold less than half the mode's count; a histogram that falls
    monotonically from its first bin has its mode at the end and is not bell-shaped.

    Returns:
        ``mode``: the mode bin's center; ``mode_bin``: its index; ``bell``: the test above.
    """
    c = np.asarray(counts, dtype=np.float64)
    i = int(np.argmax(c))
    peak = c[i]
    bell = 0 < i < len(c) - 1 and c[0] < peak / 2 and c[-1] < peak / 2
    return {"mode": float(centers[i]), "mode_bin": i, "bell": bool(bell)}


def ends(counts: Sequence[int]) -> dict[str, float]:
    """Shares of a linear-axis histogram at the low end (the first bin, σ/σ₁ < 1/bins), at
    the high end (σ/σ₁ ≥ 0.5) and in between (``middle``)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total == 0:
        return {"low": math.nan, "high": math.nan, "middle": math.nan}
    half = int(round(HIGH_END * len(c)))
    low, high = c[0] / total, c[half:].sum() / total
    return {"low": float(low), "high": float(high), "middle": float(1.0 - low - high)}
