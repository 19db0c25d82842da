"""The best rank-r approximation of one ΔW (Eckart–Young), as two balanced factors.

With ΔW = U S Vᵀ (p × q, stored layout), the truncation ΔW_r = U_r S_r V_rᵀ minimises
‖ΔW − X‖_F over rank-r X, with relative error ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F = √(Σ_{i>r} σ_i² / Σ σ_i²).
It is returned as ΔW_r = L Rᵀ with L = U_r √S_r (p, r) and R = V_r √S_r (q, r): both factors
carry √σ, so neither is tiny next to the other in float32/bf16, and a LoRA written with s = 1
(α = r) merges to exactly ΔW_r.

Routes: a dense ΔW through :func:`~spectra.engine.svd.svd_dense`; a factored one through
:func:`~spectra.engine.svd.svd_factored` (never formed); ``randomized`` through
:func:`~spectra.engine.randomized.randomized_svd`, whose ΔW_r = U_r U_rᵀ ΔW is an orthogonal
projection, so its achieved error √(1 − Σ_{i≤r} s_i² / ‖ΔW‖_F²) is exact (with the exact
‖ΔW‖_F), though not known to be the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from spectra.engine.randomized import randomized_svd
from spectra.engine.svd import svd_dense, svd_factored
from spectra.update import ModuleUpdate

SvdRoute = Literal["exact", "randomized"]


@dataclass(frozen=True, eq=False)
class Truncation:
    """ΔW_r = left @ right.T of one module.

    Attributes:
        left: (p, r) U_r √S_r.
        right: (q, r) V_r √S_r.
        values: The singular values computed: all of them (exact) or the top r (randomized).
        relative_error: ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F (0 for a zero ΔW).
        energy: ‖ΔW‖_F², float64.
    """

    left: torch.Tensor
    right: torch.Tensor
    values: torch.Tensor
    relative_error: float
    energy: float


def truncate(update: ModuleUpdate, r: int, *, svd: SvdRoute = "exact") -> Truncation:
    """The best rank-r approximation of ``update`` (see the module docstring).

    Args:
        update: ΔW of one module, dense or factored, (p, q).
        r: Rank, 1 ≤ r ≤ min(p, q).
        svd: ``"exact"`` or ``"randomized"`` (dense updates only; factored ones are exact
            and cheap anyway).

    Raises:
        ValueError: r out of range, or ΔW not finite.
    """
    p, q = update.shape
    if not 1 <= r <= min(p, q):
        raise ValueError(f"{update.module}: rank {r} outside [1, {min(p, q)}] for shape {(p, q)}")
    if update.factored:
        assert update.left is not None and update.right is not None
        s, u, v = svd_factored(update.left, update.right, vectors=r)
    elif svd == "randomized":
        assert update.dense is not None
        s, u, v = randomized_svd(update.dense, r)
    else:
        assert update.dense is not None
        s, u, v = svd_dense(update.dense, vectors=r)
    if u is None or v is None:
        raise ValueError(f"{update.module}: ΔW holds NaN or inf")
    k = min(r, len(s))
    root = s[:k].sqrt()
    left, right = u[:, :k] * root, v[:, :k] * root  # (p, k), (q, k)
    if k < r:  # a factored ΔW of inner rank < r: pad with zero directions
        left = torch.cat([left, left.new_zeros(p, r - k)], 1)
        right = torch.cat([right, right.new_zeros(q, r - k)], 1)
    total = _energy(update, s, svd)
    kept = float(s[:r].to(torch.float64).pow(2).sum())
    error = math.sqrt(max(0.0, total - kept) / total) if total > 0 else 0.0
    return Truncation(left, right, s, error, total)


def _energy(update: ModuleUpdate, s: torch.Tensor, svd: SvdRoute) -> float:
    """‖ΔW‖_F²: Σσ² when every σ was computed, else from ΔW itself (float64)."""
    if svd == "randomized" and not update.factored:
        assert update.dense is not None
        return float(torch.linalg.vector_norm(update.dense, dtype=torch.float64) ** 2)
    return float(s.to(torch.float64).pow(2).sum())
