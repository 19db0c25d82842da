"""Dominance metrics of one spectrum, and the normalizations the plots share.

Every number is computed here once, from the singular values σ_1 ≥ σ_2 ≥ … ≥ σ_m ≥ 0 widened
to float64 (sums of squares over thousands of values lose digits in float32).

Normalizations used (stated in output and docs):

* top-k energy share: Σ_{i≤k} σ_i² / Σ σ_i²;
* effective rank (Roy & Vetterli 2007): exp(−Σ p_i log p_i), p_i = σ_i / Σσ;
* stable rank: Σσ² / σ_1²;
* spectral entropy: −Σ q_i log q_i / log m, q_i = σ_i² / Σσ², m = number of values computed
  (the inner rank R of a factored update, min(out, in) of a dense one);
* numerical rank: #{σ_i > σ_1 · max(out, in) · eps(dtype)} (numpy ``matrix_rank``'s rule);
* energy rank k_τ (``k90``, ``k95``, ``k99``): the smallest k with top-k energy share ≥ τ,
  over the full spectrum (structural zeros add no energy, so they never change k_τ);
* utilisation: effective rank / R, R the inner rank of a factored update (adapters only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from spectra.engine.svd import Spectrum

MetricValue = float | int | bool | None
# k_τ keys of the metrics: the energy shares τ every module reports
ENERGY_RANKS = {"k90": 0.90, "k95": 0.95, "k99": 0.99}
# relative slack of the k_τ comparison: a share that is τ in exact arithmetic may be computed
# a few ulps below it (σ² and the running sum round), and must still count as reaching τ
_ENERGY_SLACK = 1e-12


def _f64(values: torch.Tensor) -> torch.Tensor:
    """(m,) float64, sorted descending (a no-op for a Spectrum's values)."""
    return torch.sort(values.detach().to(device="cpu", dtype=torch.float64), descending=True)[0]


def normalized_spectrum(values: torch.Tensor, mode: Literal["max", "sum"] = "max") -> torch.Tensor:
    """σ_i / σ_1 (``mode="max"``) or σ_i / Σσ (``mode="sum"``), float64, descending.

    Args:
        values: (m,) singular values, any order.
        mode: Which normalization.

    Returns:
        (m,) normalized values; all zeros when every σ is 0.
    """
    if mode not in ("max", "sum"):
        raise ValueError(f"mode must be 'max' or 'sum', got {mode!r}")
    s = _f64(values)
    if len(s) == 0:
        return s
    denom = float(s[0]) if mode == "max" else float(s.sum())
    return s / denom if denom > 0 else torch.zeros_like(s)


def cumulative_energy(values: torch.Tensor) -> torch.Tensor:
    """Cumulative energy share c_k = Σ_{i≤k} σ_i² / Σ σ_i², k = 1..m, float64.

    Args:
        values: (m,) singular values, any order (sorted descending here).

    Returns:
        (m,) non-decreasing, in [0, 1], ending at 1; all zeros when every σ is 0 (clipped:
        the running sum and the total round differently, so the last share can be 1 + ulp).
    """
    sq = _f64(values) ** 2
    total = sq.sum()
    if float(total) == 0.0:
        return torch.zeros_like(sq)
    return (torch.cumsum(sq, 0) / total).clamp_(0.0, 1.0)


def energy_share(values: torch.Tensor, k: int) -> float | None:
    """Top-k energy share Σ_{i≤k} σ_i² / Σ σ_i² (k clipped to m).

    Args:
        values: (m,) singular values, any order.
        k: Number of top values, ≥ 1.

    Returns:
        The share in [0, 1], or None when every σ is 0 (or there are none).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cum = cumulative_energy(values)
    if len(cum) == 0 or float(cum[-1]) == 0.0:
        return None
    return float(cum[min(k, len(cum)) - 1])


def _share_of(cum: torch.Tensor, k: int) -> float:
    """:func:`energy_share` from the cumulative shares ``cum`` (m,) of a non-zero spectrum."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(cum[min(k, len(cum)) - 1])


def rank_tolerance(sigma1: float, shape: tuple[int, int], eps: float) -> float:
    """σ_1 · max(out, in) · eps: singular values at or below this are numerically zero.

    numpy ``matrix_rank``'s default rule; ``eps`` is the machine epsilon of the dtype the
    SVD was computed in (``torch.finfo(dtype).eps``).
    """
    return sigma1 * max(shape) * eps


def _entropy(p: torch.Tensor) -> float:
    """−Σ p log p with 0 log 0 = 0."""
    p = p[p > 0]
    return float(-(p * torch.log(p)).sum())


def _degenerate_metrics(ks: Sequence[int], zero: bool) -> dict[str, MetricValue]:
    """The metrics of a zero update (``zero``) or of a non-finite one (all None)."""
    d: dict[str, MetricValue] = {f"top{k}_energy": None for k in ks}
    d["topr_energy"] = None
    for name in ("effective_rank", "stable_rank", "spectral_entropy"):
        d[name] = 0.0 if zero else None
    d["frobenius_norm"] = d["spectral_norm"] = 0.0 if zero else None
    d["numerical_rank"] = 0 if zero else None
    d.update({key: 0 if zero else None for key in ENERGY_RANKS})
    return d


def dominance_metrics(
    spec: Spectrum,
    *,
    ks: Sequence[int] = (1, 4),
    r: int | None = None,
    dtype_eps: float | None = None,
    shape: tuple[int, int] | None = None,
    inner_rank: int | None = None,
) -> dict[str, MetricValue]:
    """Dominance metrics of one spectrum (see the module docstring for every formula).

    Args:
        spec: The spectrum; only ``values`` (m,) and ``shape`` are used (structural zeros add
            nothing to any of these sums).
        ks: The k of each ``top{k}_energy`` key.
        r: The k of ``topr_energy``; default m = len(spec.values), i.e. the inner rank R of a
            factored update (min(R, out, in)). Pass the LoRA rank to compare a dense update.
        dtype_eps: Machine epsilon of the numerical-rank rule; default that of
            ``spec.values.dtype`` (the dtype ΔW was decomposed in).
        shape: (out, in), when ``spec.shape`` is not set. With neither, numerical_rank is None.
        inner_rank: R of a factored update (an adapter): adds ``utilisation`` = effective
            rank / R. None for a dense update (``utilisation`` None).

    Returns:
        ``top{k}_energy`` for k in ks, ``topr_energy``, ``r_for_topr``, ``effective_rank``,
        ``stable_rank``, ``spectral_entropy`` (normalized by log m; 0 when m == 1),
        ``frobenius_norm``, ``spectral_norm``, ``numerical_rank``, ``k90``, ``k95``, ``k99``,
        ``utilisation``, ``nonfinite``.
        A zero update (σ_1 == 0, or m == 0): energies None, the ranks, k_τ, entropy and
        norms 0 (utilisation 0 with an inner rank). A non-finite spectrum: every metric None
        and ``nonfinite`` True.
    """
    m = len(spec.values)
    r_top = m if r is None else r
    if not spec.finite:
        return {
            **_degenerate_metrics(ks, zero=False),
            "r_for_topr": r_top,
            "utilisation": None,
            "nonfinite": True,
        }
    s = _f64(spec.values)
    if m == 0 or float(s[0]) == 0.0:
        return {
            **_degenerate_metrics(ks, zero=True),
            "r_for_topr": r_top,
            "utilisation": None if not inner_rank else 0.0,
            "nonfinite": False,
        }
    sq, sigma1 = s**2, float(s[0])
    shape = shape if shape is not None else spec.shape
    cum = cumulative_energy(s)  # once for every share and k_τ below (as energy_share computes it)
    out: dict[str, MetricValue] = {f"top{k}_energy": _share_of(cum, k) for k in ks}
    out["topr_energy"] = _share_of(cum, r_top) if r_top >= 1 else None
    out["r_for_topr"] = r_top
    out["effective_rank"] = math.exp(_entropy(s / s.sum()))
    out["stable_rank"] = float(sq.sum()) / sigma1**2
    out["spectral_entropy"] = _entropy(sq / sq.sum()) / math.log(m) if m > 1 else 0.0
    out["frobenius_norm"] = math.sqrt(float(sq.sum()))
    out["spectral_norm"] = sigma1
    out["numerical_rank"] = None if shape is None else _numerical_rank(s, shape, spec, dtype_eps)
    out.update({key: energy_rank_of(cum, tau) for key, tau in ENERGY_RANKS.items()})
    effective = out["effective_rank"]
    out["utilisation"] = effective / inner_rank if inner_rank else None
    out["nonfinite"] = False
    return out


def _numerical_rank(
    s: torch.Tensor, shape: tuple[int, int], spec: Spectrum, dtype_eps: float | None
) -> int:
    eps = torch.finfo(spec.values.dtype).eps if dtype_eps is None else dtype_eps
    tol = rank_tolerance(float(s[0]), shape, eps)
    return int((s > tol).sum())


def energy_rank(values: torch.Tensor, tau: float) -> int:
    """k_τ: the smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ τ.

    Structural zeros (a factored update's missing values) add no energy, so the values
    computed are enough. A tolerance of 1e-12 absorbs the rounding of the cumulative sum
    (k_1.0 is then the number of non-zero values).

    Args:
        values: (m,) singular values, any order.
        tau: Energy share to keep, in (0, 1].

    Returns:
        k_τ in [1, m]; 0 when every σ is 0 (or there are none).

    Raises:
        ValueError: ``tau`` is not in (0, 1].
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    cum = cumulative_energy(values)
    if len(cum) == 0 or float(cum[-1]) == 0.0:
        return 0
    k = energy_rank_of(cum, tau)
    return len(cum) if k is None else k


def energy_rank_of(cum: torch.Tensor, tau: float) -> int | None:
    """k_τ from cumulative energy shares ``cum`` (m,) (of the whole energy, possibly of only
    the top m values): 1 + #{k : c_k < τ − 1e-12}; None when even c_m stays below τ (the
    values given do not reach τ: a truncated spectrum)."""
    below = int((cum < tau - _ENERGY_SLACK).sum())
    return below + 1 if below < len(cum) else None
