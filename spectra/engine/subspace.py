"""Similarity of subspaces: the LoRA paper's φ grid, principal angles, Grassmann distance,
and the parallel modules of one MultiLoRA layer against each other.

For orthonormal bases U1: (d, i) and U2: (d, j) (columns ordered by importance, e.g. top
singular vectors),

    φ(a, b) = ‖U1[:, :a]ᵀ U2[:, :b]‖_F² / min(a, b) ∈ [0, 1]

(LoRA paper, Sec. 7.2): 1 when one span contains the other, 0 when they are orthogonal; it is
the mean squared cosine of the min(a, b) principal angles. All products are taken in float64.
"""

from __future__ import annotations

import math

import torch

from spectra.engine.metrics import rank_tolerance
from spectra.engine.svd import svd_factored
from spectra.engine.threads import one_thread
from spectra.update import ModuleUpdate

# Largest |UᵀU − I| entry accepted as "orthonormal columns": float32 bases from a QR/SVD of
# a 16k-row matrix are off by ~1e-5, while an unnormalized basis is off by O(1).
_ORTHO_TOL = {torch.float32: 1e-3, torch.float64: 1e-9}


def _checked_pair(U1: torch.Tensor, U2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both bases as float64 after checking shapes and orthonormality.

    Raises:
        ValueError: A basis is not 2-D, the row counts d differ, or columns are not
            orthonormal (within ``_ORTHO_TOL`` of the basis's dtype).
    """
    if U1.ndim != 2 or U2.ndim != 2:
        raise ValueError(f"bases must be 2-D (d, k), got {tuple(U1.shape)} and {tuple(U2.shape)}")
    if U1.shape[0] != U2.shape[0]:
        raise ValueError(
            f"bases live in different spaces: U1 {tuple(U1.shape)}, U2 {tuple(U2.shape)} "
            "(compare left with left, right with right, of matrices of the same shape)"
        )
    pair = []
    for name, u in (("U1", U1), ("U2", U2)):
        tol = _ORTHO_TOL.get(u.dtype, _ORTHO_TOL[torch.float32])
        u64 = u.detach().to(device="cpu", dtype=torch.float64)
        gram_err = (u64.T @ u64 - torch.eye(u64.shape[1], dtype=torch.float64)).abs()
        if gram_err.numel() and float(gram_err.max()) > tol:
            raise ValueError(
                f"{name} {tuple(u.shape)} does not have orthonormal columns "
                f"(max |UᵀU − I| = {float(gram_err.max()):.2e} > {tol:g}); pass singular "
                "vectors or a QR factor Q"
            )
        pair.append(u64)
    return pair[0], pair[1]


def _cross(B1: torch.Tensor, B2: torch.Tensor) -> torch.Tensor:
    """B1ᵀ B2 (k1, k2), on one thread: the same bits whatever the thread budget."""
    with one_thread():
        return B1.T @ B2


def _phi(B1: torch.Tensor, B2: torch.Tensor) -> float:
    """‖B1ᵀ B2‖_F² / min(k1, k2) for float64 orthonormal bases B1: (d, k1), B2: (d, k2),
    clipped to [0, 1] (rounding of the orthonormality)."""
    return min(1.0, float(_cross(B1, B2).pow(2).sum()) / min(B1.shape[1], B2.shape[1]))


def phi_grid(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """The whole φ(a, b) grid, a = 1..i, b = 1..j, from one product.

    M = (U1ᵀ U2)² elementwise, C = cumsum over rows then columns of M (C[a-1, b-1] =
    ‖U1[:, :a]ᵀ U2[:, :b]‖_F²), φ = C / min(a, b).

    Args:
        U1: (d, i) orthonormal columns.
        U2: (d, j) orthonormal columns.

    Returns:
        (i, j) float64 grid, entry [a-1, b-1] = φ(a, b), clipped to [0, 1] (vectors
        orthonormal to rounding give φ = 1 + ulp for identical subspaces).

    Raises:
        ValueError: Shapes do not match or columns are not orthonormal.
    """
    B1, B2 = _checked_pair(U1, U2)
    i, j = B1.shape[1], B2.shape[1]
    M = _cross(B1, B2).pow(2)  # (i, j)
    C = M.cumsum(0).cumsum(1)  # (i, j)
    a = torch.arange(1, i + 1, dtype=torch.float64)[:, None]  # (i, 1)
    b = torch.arange(1, j + 1, dtype=torch.float64)[None, :]  # (1, j)
    return (C / torch.minimum(a, b)).clamp_(0.0, 1.0)


def phi_grid_loop(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """φ(a, b) cell by cell, one product per cell: the reference for tests and benchmarks.

    Same arguments, result and errors as :func:`phi_grid`.
    """
    B1, B2 = _checked_pair(U1, U2)
    i, j = B1.shape[1], B2.shape[1]
    grid = torch.empty(i, j, dtype=torch.float64)
    for a in range(1, i + 1):
        for b in range(1, j + 1):
            grid[a - 1, b - 1] = _phi(B1[:, :a], B2[:, :b])
    return grid


def principal_angles(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """Principal angles θ_k = arccos σ_k(U1ᵀ U2) between span(U1) and span(U2).

    σ_k is clamped to [0, 1] first (rounding can push it past 1). Angles below ~1e-8 rad are
    not resolved (arccos near 1 in float64).

    Args:
        U1: (d, i) orthonormal columns.
        U2: (d, j) orthonormal columns.

    Returns:
        (min(i, j),) float64 angles in radians, ascending.

    Raises:
        ValueError: Shapes do not match or columns are not orthonormal.
    """
    B1, B2 = _checked_pair(U1, U2)
    with one_thread():
        cos = torch.linalg.svdvals(B1.T @ B2).clamp(0.0, 1.0)  # descending: angles ascending
    return torch.arccos(cos)


def grassmann_distance(U1: torch.Tensor, U2: torch.Tensor) -> float:
    """Grassmann (geodesic) distance ‖θ‖₂ over the principal angles (radians)."""
    return float(torch.linalg.vector_norm(principal_angles(U1, U2)))


def projection_distance(U1: torch.Tensor, U2: torch.Tensor) -> float:
    """Projection distance sqrt(p − Σ_k cos² θ_k), p = min(i, j) = number of angles.

    For i == j this is ‖U1U1ᵀ − U2U2ᵀ‖_F / √2.
    """
    theta = principal_angles(U1, U2)
    return math.sqrt(max(float(len(theta) - torch.cos(theta).pow(2).sum()), 0.0))


def _group_bases(
    update: ModuleUpdate,
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Orthonormal bases (left (out, k_i), right (in, k_i)) of each module's own ΔW_i.

    ΔW_i = left[:, o_i:o_i+g_i] @ right[o_i:o_i+g_i] is decomposed exactly (factored SVD) and
    its singular vectors are kept up to its numerical rank k_i (σ > σ_1·max(out, in)·eps).
    None for a module whose ΔW_i is zero or not finite.
    """
    assert update.left is not None and update.right is not None
    bases: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    offset = 0
    for g in update.groups:
        s, u, v = svd_factored(
            update.left[:, offset : offset + g], update.right[offset : offset + g], vectors=g
        )
        offset += g
        if u is None or v is None or len(s) == 0 or not bool(torch.isfinite(s).all()):
            bases.append(None)
            continue
        tol = rank_tolerance(float(s[0]), update.shape, torch.finfo(s.dtype).eps)
        k = int((s > tol).sum())
        bases.append(None if k == 0 else (u[:, :k].double(), v[:, :k].double()))
    return bases


def group_similarity(update: ModuleUpdate) -> tuple[torch.Tensor, torch.Tensor]:
    """φ between the n parallel modules of one MultiLoRA layer, output and input side.

    Entry [i, j] = φ(k_i, k_j) = ‖B_iᵀ B_j‖_F² / min(k_i, k_j), B_i an orthonormal basis of the
    column space (left) or row space (right) of module i's own contribution
    ΔW_i = (α/r)·diag(s_i) B_i A_i. For full-rank blocks these are exactly the column spaces
    of the left block and of the right block; taking them from ΔW_i's exact SVD (rather than
    a plain QR, whose Q has spurious columns for a rank-deficient block) keeps only the
    directions the module really contributes (numerical rank k_i).

    Args:
        update: A factored update with ``groups`` = (g_1, …, g_n).

    Returns:
        (left_phi (n, n), right_phi (n, n)) float64, symmetric, diagonal 1. Row and column i
        are NaN when module i contributes nothing (ΔW_i == 0, e.g. its scaling s_i is zero)
        or is not finite.

    Raises:
        ValueError: The update is dense or has no groups.
    """
    if not update.factored or not update.groups:
        raise ValueError(
            f"{update.module}: group similarity needs a factored MultiLoRA update with groups"
        )
    bases = _group_bases(update)
    n = len(bases)
    left_phi = torch.full((n, n), float("nan"), dtype=torch.float64)
    right_phi = left_phi.clone()
    for i in range(n):
        for j in range(i, n):
            bi, bj = bases[i], bases[j]
            if bi is None or bj is None:
                continue
            left_phi[i, j] = left_phi[j, i] = _phi(bi[0], bj[0])
            right_phi[i, j] = right_phi[j, i] = _phi(bi[1], bj[1])
    return left_phi, right_phi
