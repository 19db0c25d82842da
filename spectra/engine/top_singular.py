"""σ₁ of a large matrix without its SVD: block Lanczos (block Krylov) with Rayleigh–Ritz.

For A (N, n), N ≥ n (the tall orientation of W), the Krylov space of AᵀA started from a random
(n, b) block Ω,

    K_j = span[Ω, (AᵀA) Ω, …, (AᵀA)^j Ω]   (orthonormal basis Q: (n, (j+1)·b)),

holds a good approximation of the top right singular vector after a few steps, even when σ₁ is
not separated from σ₂ (Musco & Musco 2015, "Randomized block Krylov methods for stronger and
faster approximate SVD"). The Ritz value σ₁(A Q) is a lower bound of σ₁(A) that grows with j;
the iteration stops when it changes by less than ``tol`` (relative) from one step to the next.
Each step reads A twice (A Q_j and Aᵀ Y_j, with b columns), so the cost is O(N·n·b) per step
instead of the O(N·n²) of an SVD.
"""

from __future__ import annotations

import math

import torch

from spectra.engine.svd import compute_dtype

TOP_SINGULAR_TOL = 1e-3  # relative change of the Ritz value between two steps that stops it
TOP_SINGULAR_BLOCK = 16  # b: columns per Krylov block
TOP_SINGULAR_MAX_STEPS = 12  # at most this many blocks (Krylov dimension ≤ 12·b)


def top_singular_value(
    matrix: torch.Tensor,
    *,
    tol: float = TOP_SINGULAR_TOL,
    block: int = TOP_SINGULAR_BLOCK,
    max_steps: int = TOP_SINGULAR_MAX_STEPS,
    seed: int = 0,
) -> float:
    """σ₁ = ‖W‖₂ of a 2-D matrix by block Lanczos on WᵀW (or WWᵀ, the smaller side).

    Args:
        matrix: (out, in) W, any float dtype (all products in float32, or float64 for a
            float64 W; the small Ritz eigenproblem in float64).
        tol: Stop when the Ritz value σ₁(A Q_j) rises by less than ``tol`` · itself in one
            step. It is a lower bound of σ₁ that converges from below; the error left at the
            stop is of the order of the last change or smaller.
        block: Columns b of each Krylov block.
        max_steps: Most blocks built; the basis is exact (Ritz value = σ₁) once it spans all
            n = min(out, in) directions, which ends the iteration early on small matrices.
        seed: Seed of the random start block (the result is reproducible).

    Returns:
        σ₁ as a float; 0.0 for an all-zero or empty matrix, NaN when W is not finite.
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    if tol <= 0 or block < 1 or max_steps < 1:
        raise ValueError(
            f"need tol > 0, block >= 1, max_steps >= 1; got {tol}, {block}, {max_steps}"
        )
    w = matrix.to(dtype=compute_dtype(matrix.dtype)).contiguous()  # (out, in), row-major
    n = min(w.shape)
    if w.numel() == 0:
        return 0.0
    tall = w.shape[0] >= w.shape[1]
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(n, min(block, n), generator=gen, dtype=torch.float64).to(w.dtype)
    q = torch.linalg.qr(start)[0]  # (n, b)
    basis = q  # (n, k) orthonormal, k grows by ≤ b per step; q is its last block
    t = torch.zeros(0, 0, dtype=w.dtype)  # basisᵀ AᵀA basis (k, k): block Lanczos T
    # columns of z = AᵀA q below √eps · σ₁² (the products' rounding) add no new direction
    negligible = math.sqrt(torch.finfo(w.dtype).eps)
    previous = 0.0
    for _ in range(max_steps):
        z = _gram_times(w, q, tall)  # (n, b) = AᵀA q
        c = basis.T @ z  # (k, b): the new columns of T (its old rows by symmetry)
        old = t.shape[0]
        t = torch.cat([torch.cat([t, c[:old]], 1), torch.cat([c[:old].T, c[old:]], 1)], 0)
        if not bool(torch.isfinite(t).all()):  # W holds NaN/inf
            return math.nan
        lam = float(torch.linalg.eigvalsh((t + t.T).double() / 2)[-1])  # top Ritz value²
        sigma = math.sqrt(max(lam, 0.0))
        if sigma == 0.0 or basis.shape[1] >= n or sigma - previous <= tol * sigma:
            return sigma
        previous = sigma
        z = z - basis @ c
        z = z - basis @ (basis.T @ z)  # twice is enough (Gram–Schmidt)
        q, r = torch.linalg.qr(z)
        keep = r.diagonal().abs() > negligible * sigma * sigma
        if not bool(keep.any()):  # the Krylov space is invariant: the Ritz value is exact
            return sigma
        q = q[:, keep]
        basis = torch.cat([basis, q], dim=1)
    return previous


def _gram_times(w: torch.Tensor, x: torch.Tensor, tall: bool) -> torch.Tensor:
    """AᵀA x for A = W (tall) or Wᵀ (wide), W (out, in) row-major, x (n, b); both products
    stream W by rows (Wᵀ y as (yᵀ W)ᵀ): multiplying by a transposed view is several times
    slower."""
    if tall:
        return (w @ x).T.matmul(w).T  # Wᵀ (W x): (in, b)
    return w @ (x.T @ w).T  # W (Wᵀ x): (out, b)
