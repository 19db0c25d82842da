"""Exact singular values (and top singular vectors) of ΔW, dense or factored.

A factored update ΔW = L R (L: (out, R), R: (R, in)) is never multiplied out: with the reduced
QR factorizations L = Q_u R_u and Rᵀ = Q_v R_v,

    ΔW = Q_u (R_u R_vᵀ) Q_vᵀ,   and the SVD of the small core R_u R_vᵀ = U_c S V_cᵀ gives
    ΔW = (Q_u U_c) S (Q_v V_c)ᵀ,

an exact SVD in O((out + in)·R²) instead of O(out·in·min(out, in)). Everything is computed in
the update's dtype widened to at least float32, and returned on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from spectra.engine.device import resolve_device
from spectra.update import ModuleUpdate

Backend = Literal["auto", "torch", "scipy"]

# Which LAPACK wrapper computes dense singular values (no vectors) on the CPU. Both call gesdd
# with jobz='N'; torch links MKL, scipy its own OpenBLAS. Measured with
# tests/benchmarks/bench_engine.py (section c), 1 thread, on the project's 2-core dev machine:
# 1024² float32/float64 tie (0.17 s vs 0.17 s, 0.30 s vs 0.28 s, scipy vs torch, idle machine);
# 4096² float32 torch is 4x faster (9.5 s vs 37.7 s, loaded machine). Hence torch for both.
# Rerun the benchmark on a new platform before changing this.
_CPU_VALUES_BACKEND: dict[torch.dtype, Literal["torch", "scipy"]] = {
    torch.float32: "torch",
    torch.float64: "torch",
}

# (values (m,), U (out, k) or None, V (in, k) or None)
SVDResult = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields has no single truth value
class Spectrum:
    """The singular values of one ΔW, and optionally its top singular vectors.

    Attributes:
        values: (m,) singular values actually computed, descending: all min(out, in) of a
            dense update; min(R, out, in) of a factored one. NaN-filled when ΔW is not finite.
        full_size: min(out, in), the length of the full spectrum.
        structural_zeros: full_size − m: singular values that are exactly zero because the
            update is factored with inner size R < min(out, in) (0 for dense updates).
        U: (out, k) top-k left singular vectors (columns), or None when not asked for.
        V: (in, k) top-k right singular vectors (columns), or None when not asked for.
        shape: (out, in) of ΔW, when known (the numerical-rank rule needs max(out, in)).
    """

    values: torch.Tensor
    full_size: int
    structural_zeros: int
    U: torch.Tensor | None = None
    V: torch.Tensor | None = None
    shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {tuple(self.values.shape)}")
        if self.structural_zeros < 0 or len(self.values) + self.structural_zeros != self.full_size:
            raise ValueError(
                f"{len(self.values)} values + {self.structural_zeros} structural zeros "
                f"!= full_size {self.full_size}"
            )

    @property
    def finite(self) -> bool:
        """False when ΔW held NaN/inf (values are then NaN)."""
        return bool(torch.isfinite(self.values).all())

    def full(self) -> torch.Tensor:
        """(full_size,) the whole spectrum: ``values`` followed by the structural zeros."""
        return torch.cat([self.values, self.values.new_zeros(self.structural_zeros)])


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the engine computes in: float64 stays float64, anything else becomes float32.

    Raises:
        ValueError: ``dtype`` is not a real floating dtype.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"ΔW must be a real floating tensor, got {dtype}")
    return torch.float64 if dtype == torch.float64 else torch.float32


def _nan_result(m: int, dtype: torch.dtype) -> SVDResult:
    return torch.full((m,), float("nan"), dtype=dtype), None, None


def _svdvals_scipy(a: torch.Tensor, driver: str = "gesdd") -> torch.Tensor:
    # The copy is what gesdd overwrites (overwrite_a), never the caller's tensor.
    work = np.array(a.numpy(), order="F", copy=True)
    s = scipy.linalg.svd(
        work, compute_uv=False, lapack_driver=driver, check_finite=False, overwrite_a=True
    )
    return torch.from_numpy(np.ascontiguousarray(s))


def _svdvals(a: torch.Tensor, backend: Backend) -> torch.Tensor:
    """Singular values of a finite 2-D tensor, descending, on a's device and dtype."""
    if a.device.type != "cpu":
        return torch.linalg.svdvals(a)
    pick = _CPU_VALUES_BACKEND[a.dtype] if backend == "auto" else backend
    try:
        return _svdvals_scipy(a) if pick == "scipy" else torch.linalg.svdvals(a)
    except (np.linalg.LinAlgError, torch.linalg.LinAlgError):
        # gesdd's divide and conquer can fail to converge; the QR-iteration gesvd is slower
        # but does not (LAPACK's own advice).
        return _svdvals_scipy(a, driver="gesvd")


def _svd_top(a: torch.Tensor, k: int) -> SVDResult:
    """Full thin SVD of a finite 2-D tensor (gesdd on CPU), keeping the top-k vectors."""
    try:
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
    except torch.linalg.LinAlgError:
        u_np, s_np, vh_np = scipy.linalg.svd(
            a.cpu().numpy(), full_matrices=False, lapack_driver="gesvd", check_finite=False
        )
        u, s, vh = (torch.from_numpy(x).to(a.device) for x in (u_np, s_np, vh_np))
    # u: (p, m), vh: (m, q) -> U: (p, k), V: (q, k)
    return s, u[:, :k].contiguous(), vh[:k].T.contiguous()


def _to_cpu(result: SVDResult) -> SVDResult:
    return tuple(None if t is None else t.cpu() for t in result)  # type: ignore[return-value]


def svd_dense(
    matrix: torch.Tensor,
    *,
    vectors: int = 0,
    device: str | torch.device = "cpu",
    backend: Backend = "auto",
) -> SVDResult:
    """Exact SVD of a dense (out, in) matrix.

    With ``vectors == 0`` only the singular values are computed (LAPACK gesdd, jobz='N'; on
    the CPU via torch or scipy, whichever measured faster for the dtype, see
    ``_CPU_VALUES_BACKEND``). With ``vectors > 0`` a thin SVD is computed and the top
    ``vectors`` singular vectors are kept.

    Args:
        matrix: (out, in) ΔW; widened to float32 (float64 stays float64) before computing.
        vectors: Number k of top singular vectors to return (clipped to min(out, in)).
        device: ``"cpu"`` or ``"cuda[:N]"``; results always come back on the CPU.
        backend: ``"auto"`` (the measured pick), or force ``"torch"`` / ``"scipy"`` (CPU).

    Returns:
        (values (m,), U (out, k) or None, V (in, k) or None), m = min(out, in). When the
        matrix holds NaN/inf, values are NaN and U, V are None.

    Raises:
        ValueError: ``matrix`` is not 2-D or not floating.
        OptionError: ``device`` is not available.
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    dev = resolve_device(device)
    dtype = compute_dtype(matrix.dtype)
    m = min(matrix.shape)
    a = matrix.to(device=dev, dtype=dtype)
    if not bool(torch.isfinite(a).all()):
        return _nan_result(m, dtype)
    if vectors <= 0:
        return _svdvals(a, backend).cpu(), None, None
    return _to_cpu(_svd_top(a, min(vectors, m)))


def svd_factored(
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    vectors: int = 0,
    device: str | torch.device = "cpu",
) -> SVDResult:
    """Exact SVD of ΔW = left @ right without forming the (out, in) product.

    L = Q_u R_u, Rᵀ = Q_v R_v (reduced QR), core C = R_u R_vᵀ = U_c S V_cᵀ, then
    ΔW = (Q_u U_c) S (Q_v V_c)ᵀ. Works for any inner size R, including R > min(out, in)
    (MultiLoRA's n·r) and R = 0.

    Args:
        left: (out, R) left factor (scaling folded in).
        right: (R, in) right factor.
        vectors: Number k of top singular vectors to return (clipped to m).
        device: ``"cpu"`` or ``"cuda[:N]"``; results always come back on the CPU.

    Returns:
        (values (m,), U (out, k) or None, V (in, k) or None), m = min(R, out, in). When a
        factor (or the core) holds NaN/inf, values are NaN and U, V are None.

    Raises:
        ValueError: The factors are not 2-D or their inner sizes differ.
        OptionError: ``device`` is not available.
    """
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
        raise ValueError(f"factors {tuple(left.shape)} @ {tuple(right.shape)} do not chain")
    dev = resolve_device(device)
    dtype = compute_dtype(torch.promote_types(left.dtype, right.dtype))
    (out, inner), inp = left.shape, right.shape[1]
    m = min(inner, out, inp)
    lf, rt = left.to(device=dev, dtype=dtype), right.to(device=dev, dtype=dtype)
    if m == 0:
        empty = torch.zeros(0, dtype=dtype)
        if vectors <= 0:
            return empty, None, None
        return empty, torch.zeros(out, 0, dtype=dtype), torch.zeros(inp, 0, dtype=dtype)
    if not (bool(torch.isfinite(lf).all()) and bool(torch.isfinite(rt).all())):
        return _nan_result(m, dtype)
    q_u, r_u = torch.linalg.qr(lf)  # q_u: (out, a), r_u: (a, R), a = min(out, R)
    q_v, r_v = torch.linalg.qr(rt.T)  # q_v: (in, b), r_v: (b, R), b = min(in, R)
    core = r_u @ r_v.T  # (a, b); min(a, b) = m
    if not bool(torch.isfinite(core).all()):  # the product overflowed
        return _nan_result(m, dtype)
    if vectors <= 0:
        return _svdvals(core, "torch").cpu(), None, None
    s, u_c, v_c = _svd_top(core, min(vectors, m))  # u_c: (a, k), v_c: (b, k)
    return _to_cpu((s, q_u @ u_c, q_v @ v_c))


def spectrum(
    update: ModuleUpdate, *, vectors: int = 0, device: str | torch.device = "cpu"
) -> Spectrum:
    """The exact spectrum of one ΔW (factored updates stay factored).

    Args:
        update: Dense or factored ΔW of one module, (out, in).
        vectors: Number k of top singular vectors to keep in ``U``/``V`` (0 = values only).
        device: ``"cpu"`` (default) or ``"cuda[:N]"``; the result is on the CPU.

    Returns:
        The :class:`Spectrum`: m = min(out, in) values for a dense update, min(R, out, in)
        for a factored one plus ``structural_zeros`` = min(out, in) − m.

    Raises:
        OptionError: ``device`` is not available.
    """
    if update.factored:
        assert update.left is not None and update.right is not None
        s, u, v = svd_factored(update.left, update.right, vectors=vectors, device=device)
    else:
        assert update.dense is not None
        s, u, v = svd_dense(update.dense, vectors=vectors, device=device)
    full_size = min(update.shape)
    return Spectrum(
        values=s,
        full_size=full_size,
        structural_zeros=full_size - len(s),
        U=u,
        V=v,
        shape=update.shape,
    )
