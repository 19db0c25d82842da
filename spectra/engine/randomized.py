"""Randomized top-k SVD of a dense ΔW (Halko, Martinsson & Tropp 2011), an explicit opt-in.

The exact route (:mod:`spectra.engine.svd`) costs O(out·in·min(out, in)); for the top k
singular triplets of a large dense update, randomized subspace iteration costs
O(out·in·(k + p)·(2q + 2)):

    Ω: (in, l) Gaussian, l = k + p                (p: oversampling)
    Q = qr(A Ω)                                   Q: (out, l), an approximate range of A
    repeat q times: Q = qr(A qr(Aᵀ Q))            (power iterations, re-orthonormalized)
    B = Qᵀ A = U_b S Vᵀ                           B: (l, in), exact SVD of a small matrix
    A ≈ (Q U_b) S Vᵀ, keep the top k.

Halko et al. (Alg. 4.4 + 5.1): the error of σ_j decays like (σ_{l+1} / σ_j)^(2q+1), so it is
tiny for spectra that decay (LoRA-like, or a few dominant directions) and larger for flat
ones (a full fine-tune's bell-shaped spectrum). ``tests/benchmarks/bench_scale.py`` prints the
measured relative error of the top-k values against the exact ones for both kinds.

Only the top k values are known, so the metrics that need the whole spectrum (effective rank,
spectral entropy, numerical rank) cannot be given; :func:`truncated_metrics` gives the ones the
exact Frobenius norm completes (energy shares, stable rank).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from spectra.engine.device import resolve_device
from spectra.engine.metrics import ENERGY_RANKS, MetricValue, energy_rank_of
from spectra.engine.svd import SVDResult, _svd_top, compute_dtype

# Defaults of Halko et al. §4.2 / scikit-learn's randomized_svd: p = 10 extra columns, and a
# few power iterations (each one is two passes over A) because ΔW spectra decay slowly.
DEFAULT_OVERSAMPLE = 10
DEFAULT_POWER_ITERS = 4


def randomized_svd(
    matrix: torch.Tensor,
    k: int,
    *,
    oversample: int = DEFAULT_OVERSAMPLE,
    power_iters: int = DEFAULT_POWER_ITERS,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> SVDResult:
    """Approximate top-k singular triplets of a dense (out, in) matrix.

    σ_j ≈ σ_j(A) from below (the values of Qᵀ A never exceed those of A), with relative error
    ≈ (σ_{k+p+1} / σ_j)^(2q+1) (Halko et al. 2011, Thm. 9.1 / Cor. 10.10).

    Args:
        matrix: (out, in) ΔW; widened to float32 (float64 stays float64) before computing.
        k: Number of top singular triplets wanted (clipped to min(out, in)).
        oversample: p, extra random columns (l = k + p, clipped to min(out, in)).
        power_iters: q, power iterations; each costs two products with A.
        seed: Seed of the Gaussian test matrix Ω (drawn on the CPU, so every device sees the
            same Ω and a run is reproducible).
        device: ``"cpu"`` or ``"cuda[:N]"``; results always come back on the CPU.

    Returns:
        (values (k,), U (out, k), V (in, k)), on the CPU. When the matrix holds NaN/inf, values
        are NaN and U, V are None.

    Raises:
        ValueError: ``matrix`` is not 2-D, k < 1, p < 0 or q < 0.
        OptionError: ``device`` is not available.
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    if k < 1 or oversample < 0 or power_iters < 0:
        raise ValueError(
            f"need k >= 1, oversample >= 0, power_iters >= 0; got {k}, {oversample}, {power_iters}"
        )
    dev = resolve_device(device)
    dtype = compute_dtype(matrix.dtype)
    m = min(matrix.shape)
    k = min(k, m)
    a = matrix.to(device=dev, dtype=dtype)  # (out, in); no copy when already there
    if not bool(torch.isfinite(a).all()):
        return torch.full((k,), float("nan"), dtype=dtype), None, None
    q = _range_basis(a, min(k + oversample, m), power_iters, seed)  # (out, l)
    s, u_b, v = _svd_top(q.T @ a, k)  # u_b: (l, k), v: (in, k)
    return s[:k].cpu(), (q @ u_b).cpu(), v.cpu()  # U = Q U_b: (out, k)


def _range_basis(a: torch.Tensor, width: int, power_iters: int, seed: int) -> torch.Tensor:
    """Orthonormal Q: (out, width) whose span approximates A's top-width left singular subspace."""
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(a.shape[1], width, generator=gen, dtype=a.dtype).to(a.device)  # (in, l)
    q, _ = torch.linalg.qr(a @ omega)  # (out, l)
    for _ in range(power_iters):
        # re-orthonormalize after each product: without it the columns collapse onto the top
        # singular vector in floating point (Halko et al. Alg. 4.4)
        z, _ = torch.linalg.qr(a.T @ q)  # (in, l)
        q, _ = torch.linalg.qr(a @ z)  # (out, l)
    return q


def truncated_metrics(
    values: torch.Tensor,
    frobenius_norm: float,
    *,
    ks: Sequence[int] = (1, 4),
    r: int | None = None,
) -> dict[str, MetricValue]:
    """Dominance metrics that the top-k values and the exact ‖ΔW‖_F determine.

    With T = ‖ΔW‖_F² = Σ over the *whole* spectrum of σ_i² (exact, from the matrix):

    * ``top{j}_energy`` = Σ_{i≤j} σ_i² / T for j ≤ k (None for j > k: not known);
    * ``topr_energy`` likewise for j = r (default k);
    * ``stable_rank`` = T / σ_1²; ``frobenius_norm`` = √T; ``spectral_norm`` = σ_1;
    * ``effective_rank``, ``spectral_entropy``, ``numerical_rank``, ``utilisation``: None
      (they need every σ);
    * ``k90``, ``k95``, ``k99``: k_τ when the top k values reach τ of T, else None.

    Same keys as :func:`spectra.engine.metrics.dominance_metrics`.

    Args:
        values: (k,) top singular values, descending (e.g. from :func:`randomized_svd`).
        frobenius_norm: ‖ΔW‖_F of the whole matrix.
        ks: The j of each ``top{j}_energy`` key.
        r: The j of ``topr_energy``; default k.

    Returns:
        The metrics dict; a zero update gives energies None and norms/ranks 0, a non-finite
        one every metric None and ``nonfinite`` True.
    """
    k = len(values)
    r_top = k if r is None else r
    s = values.detach().to(device="cpu", dtype=torch.float64)  # (k,)
    out: dict[str, MetricValue] = {f"top{j}_energy": None for j in ks}
    out.update(topr_energy=None, r_for_topr=r_top, effective_rank=None, spectral_entropy=None)
    out["numerical_rank"] = None
    out.update({key: None for key in ENERGY_RANKS}, utilisation=None)
    if not (bool(torch.isfinite(s).all()) and math.isfinite(frobenius_norm)):
        return {
            **out,
            "stable_rank": None,
            "frobenius_norm": None,
            "spectral_norm": None,
            "nonfinite": True,
        }
    total = frobenius_norm**2
    if k == 0 or float(s[0]) == 0.0 or total == 0.0:
        return {
            **out,
            **{key: 0 for key in ENERGY_RANKS},
            "stable_rank": 0.0,
            "frobenius_norm": 0.0,
            "spectral_norm": 0.0,
            "nonfinite": False,
        }
    cum = torch.cumsum(s**2, 0) / total  # (k,) exact shares of the whole energy
    for j in ks:
        out[f"top{j}_energy"] = min(float(cum[j - 1]), 1.0) if 1 <= j <= k else None
    out["topr_energy"] = min(float(cum[r_top - 1]), 1.0) if 1 <= r_top <= k else None
    out.update({key: energy_rank_of(cum, tau) for key, tau in ENERGY_RANKS.items()})
    out["stable_rank"] = total / float(s[0]) ** 2
    out["frobenius_norm"] = frobenius_norm
    out["spectral_norm"] = float(s[0])
    out["nonfinite"] = False
    return out
