"""Exact singular values (and top singular vectors) of ΔW, dense or factored.

A factored update ΔW = L R (L: (out, R), R: (R, in)) is never multiplied out: with the reduced
QR factorizations L = Q_u R_u and Rᵀ = Q_v R_v,

    ΔW = Q_u (R_u R_vᵀ) Q_vᵀ,   and the SVD of the small core R_u R_vᵀ = U_c S V_cᵀ gives
    ΔW = (Q_u U_c) S (Q_v V_c)ᵀ,

an exact SVD in O((out + in)·R²) instead of O(out·in·min(out, in)). Everything is computed in
the update's dtype widened to at least float32, and returned on the CPU.

When only the values of a float32 factored ΔW are asked for, the QRs are replaced by the R × R
Gram matrices: σ(L R)² are the eigenvalues of (LᵀL)(R Rᵀ), about the flops of the QRs but as
two GEMMs (see ``_factored_values_gram`` for when it is accurate enough; else the QRs serve).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from spectra.engine.device import resolve_device
from spectra.update import ModuleUpdate

Backend = Literal["auto", "gram", "torch", "scipy"]

# Which route computes dense singular values (no vectors), per device type and compute dtype.
# Picked by measurement: tests/benchmarks/bench_engine.py (section c) on the CPU and
# tests/benchmarks/bench_gpu.py (section 5) on CUDA print the timings and errors of each route;
# the measured numbers live in that output and in the docs. The rules and their reasons:
#
# * "gram": eigenvalues of the float64 Gram matrix (see _svdvals_gram). For float32 ΔW it is
#   faster than float32 gesdd up to a size (_GRAM_VALUES_MAX_N on the CPU, where MKL's sgesdd
#   switches to a faster algorithm above it) and more accurate (float64 arithmetic). With
#   vectors (a top k < min(out, in)) it is the faster route at every size measured (see
#   svd_dense). For float64 ΔW it would square the condition number of a computation already
#   in float64, so float64 keeps gesdd.
# * "torch": LAPACK gesdd (jobz='N') through torch (MKL), always on the tall orientation:
#   torch's gesdd is slower on a wide matrix than on its transpose (same values).
# * "scipy": gesdd through scipy (OpenBLAS): never faster than torch given the tall
#   orientation; kept as a forced backend and for the non-converging fallback (gesvd).
#
# On CUDA torch's default cuSOLVER driver is not accurate enough in float32 (singular values
# and the orthonormality of singular vectors off by far more than float32 rounding); the
# QR-iteration driver gesvd is accurate and faster, so "torch" means driver="gesvd" on CUDA
# (see _cuda_driver). The float64 Gram route is faster than both and as accurate, so it is
# the CUDA route for float32 too, on GPUs with full-rate float64 (FULL_RATE_FLOAT64); the
# others (consumer cards, float64 at a small fraction of the float32 rate) keep gesvd.
# Rerun the benchmarks on a new platform before changing this.
_VALUES_ROUTE: dict[tuple[str, torch.dtype], Literal["gram", "torch", "scipy"]] = {
    ("cpu", torch.float32): "gram",
    ("cpu", torch.float64): "torch",
    ("cuda", torch.float32): "gram",
    ("cuda", torch.float64): "torch",
}
# Largest n = min(out, in) whose float32 singular values (no vectors) take the Gram route, per
# device type (None: no limit). The measured crossover on the CPU, see _VALUES_ROUTE.
_GRAM_VALUES_MAX_N: dict[str, int | None] = {"cpu": 2304, "cuda": None}
# Rows of ΔW widened to float64 at a time when forming the Gram matrix (bounds the extra
# memory to GRAM_BLOCK_ROWS × n float64 plus the n × n Gram matrix, n = min(out, in)).
GRAM_BLOCK_ROWS = 1024
# Column panel width of the lower-triangle Gram product (wider panels measured no faster).
GRAM_PANEL = 256

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


def _cuda_driver(a: torch.Tensor) -> str | None:
    """cuSOLVER's gesvd on CUDA (the default driver is 1e-3-inaccurate there); None on CPU."""
    return "gesvd" if a.device.type == "cuda" else None


def _tall(a: torch.Tensor) -> torch.Tensor:
    """``a`` or its transpose (a view), whichever has at least as many rows as columns."""
    return a if a.shape[0] >= a.shape[1] else a.T


def _svdvals_scipy(a: torch.Tensor, driver: str = "gesdd") -> torch.Tensor:
    import scipy.linalg  # here, not at the top: a noticeable start-up cost, used only here

    # The copy is what gesdd overwrites (overwrite_a), never the caller's tensor.
    work = np.array(_tall(a).numpy(), order="F", copy=True)
    s = scipy.linalg.svd(
        work, compute_uv=False, lapack_driver=driver, check_finite=False, overwrite_a=True
    )
    return torch.from_numpy(np.ascontiguousarray(s))


def _svdvals_gram(a: torch.Tensor, block_rows: int = GRAM_BLOCK_ROWS) -> torch.Tensor:
    """Singular values of a float32 (p, q) matrix from its float64 Gram matrix, in float32.

    With X = ΔW or ΔWᵀ so that X is (N, n), N ≥ n: G = XᵀX (n, n) is accumulated in float64
    from blocks of ``block_rows`` rows widened one at a time, and σ_i = sqrt(λ_i(G)) with the
    eigenvalues from LAPACK syevd (values only). Eigenvalues of G carry an absolute error of
    about n·ε₆₄·σ₁², so σ_i has an absolute error of about n·ε₆₄·σ₁²/σ_i: below float32
    gesdd's ε₃₂·σ₁ for every σ_i above ~1e-6·σ₁, and values below
    that are under the float32 input's own resolution. Negative eigenvalues (rounding of
    exact zeros) become 0.
    """
    lam = torch.linalg.eigvalsh(_gram(_tall(a), block_rows), UPLO="L")  # ascending
    return lam.clamp_min_(0).sqrt_().flip(0).to(a.dtype)


def _gram(x: torch.Tensor, block_rows: int = GRAM_BLOCK_ROWS) -> torch.Tensor:
    """The lower triangle of G = XᵀX (n, n) in float64 for X (N, n).

    Rows are widened ``block_rows`` at a time; within a block, column panels of
    ``GRAM_PANEL`` fill G[panel, :panel end] only (diagonal blocks whole), about half the
    flops of the full product (and measured faster). The strict upper triangle beyond
    the diagonal blocks stays 0: use it only with UPLO="L" (syevd reads the lower triangle).
    """
    n = x.shape[1]
    gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], block_rows):
        block = x[start : start + block_rows].to(torch.float64)
        for p in range(0, n, GRAM_PANEL):
            end = min(p + GRAM_PANEL, n)
            gram[p:end, :end].addmm_(block[:, p:end].T, block[:, :end])
    return gram


# The Gram route gives top-k vectors only while σ_k ≥ this × σ_1: U = X V / σ divides by σ_k,
# and below it a column would inherit the Gram matrix's rounding (≈ n·ε₆₄·σ₁²) magnified.
GRAM_VECTORS_MIN_RATIO = 1e-3


def _svd_top_gram(a: torch.Tensor, k: int) -> SVDResult | None:
    """Top-k singular triplets of a float32 (p, q) matrix from its float64 Gram matrix.

    With X = ΔW or ΔWᵀ, (N, n), N ≥ n: XᵀX = V Λ Vᵀ (LAPACK syevd with vectors), σ = sqrt(Λ),
    and the left vectors U_k = X V_k / σ_k, computed in float64 in row blocks. For a wide ΔW
    the roles swap (ΔW = V S Uᵀ). Every value comes back; vectors for the top k ≥ 1.

    Returns:
        (values (n,), U (p, k), V (q, k)) in float32, or None when σ_k < 1e-3·σ_1 (ΔW = 0
        included), where the division would lose accuracy: the caller then uses gesdd.
    """
    wide = a.shape[0] < a.shape[1]
    x = _tall(a)
    lam, vecs = torch.linalg.eigh(_gram(x), UPLO="L")  # ascending
    s = lam.clamp_min(0).sqrt().flip(0)  # (n,) descending, float64
    if not float(s[k - 1]) >= GRAM_VECTORS_MIN_RATIO * float(s[0]) > 0.0:
        return None
    v_k = vecs[:, -k:].flip(1)  # (n, k), the top-k eigenvectors
    u_k = torch.empty(x.shape[0], k, dtype=torch.float64, device=a.device)
    for start in range(0, x.shape[0], GRAM_BLOCK_ROWS):
        block = x[start : start + GRAM_BLOCK_ROWS].to(torch.float64)
        u_k[start : start + GRAM_BLOCK_ROWS] = block @ v_k / s[:k]
    left, right = (v_k, u_k) if wide else (u_k, v_k)
    return s.to(a.dtype), left.to(a.dtype), right.to(a.dtype)


# CUDA compute capabilities whose float64 runs at half the float32 rate: the data-centre parts
# (P100, V100, A100, H100/H200, B100/B200). Consumer cards run float64 at a small fraction, where
# the float64 Gram route would lose to gesvd, so they keep gesvd.
FULL_RATE_FLOAT64 = frozenset({(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)})


def _route(a: torch.Tensor, backend: Backend, *, vectors: bool) -> str:
    """The route for ``a``: ``backend`` if forced, else the measured pick (``_VALUES_ROUTE``)
    with its size limit (values only) and the GPU's float64 rate; never "gram" for float64."""
    pick: str = backend
    if backend == "auto":
        pick = _VALUES_ROUTE[(a.device.type, a.dtype)]
        limit = _GRAM_VALUES_MAX_N.get(a.device.type)
        if not vectors and limit is not None and min(a.shape) > limit:
            pick = "torch"  # measured: gesdd is faster at this size
        if a.device.type == "cuda" and torch.cuda.get_device_capability(a.device) not in (
            FULL_RATE_FLOAT64
        ):
            pick = "torch"
    if pick == "gram" and a.dtype == torch.float64:
        pick = "torch"  # float64 input: the Gram matrix would lose half its digits
    return pick


def _svdvals(a: torch.Tensor, backend: Backend) -> torch.Tensor:
    """Singular values of a finite 2-D tensor, descending, on a's device and dtype."""
    pick = _route(a, backend, vectors=False)
    try:
        if pick == "gram":
            return _svdvals_gram(a)
        if pick == "scipy" and a.device.type == "cpu":
            return _svdvals_scipy(a)
        return torch.linalg.svdvals(_tall(a), driver=_cuda_driver(a))
    except (np.linalg.LinAlgError, torch.linalg.LinAlgError):
        # gesdd's divide and conquer (or syevd) can fail to converge; the QR-iteration gesvd
        # is slower but does not (LAPACK's own advice).
        return _svdvals_scipy(a.cpu(), driver="gesvd").to(device=a.device, dtype=a.dtype)


def _svd_top(a: torch.Tensor, k: int) -> SVDResult:
    """Full thin SVD of a finite 2-D tensor (gesdd on CPU, gesvd on CUDA), keeping the top k.

    Computed on the tall orientation (faster in torch than a wide matrix): for a wide
    ``a``, aᵀ = U' S V'ᵀ gives a = V' S U'ᵀ, so U = V' and V = U'.
    """
    wide = a.shape[0] < a.shape[1]
    x = _tall(a)
    try:
        u, s, vh = torch.linalg.svd(x, full_matrices=False, driver=_cuda_driver(x))
    except torch.linalg.LinAlgError:
        import scipy.linalg

        u_np, s_np, vh_np = scipy.linalg.svd(
            x.cpu().numpy(), full_matrices=False, lapack_driver="gesvd", check_finite=False
        )
        u, s, vh = (torch.from_numpy(t).to(a.device) for t in (u_np, s_np, vh_np))
    # x = u diag(s) vh; u: (N, m), vh: (m, n)
    left, right = (vh.T, u) if wide else (u, vh.T)
    return s, left[:, :k].contiguous(), right[:, :k].contiguous()


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

    With ``vectors == 0`` only the singular values are computed, by the route measured
    fastest for the device, dtype and size (``_VALUES_ROUTE``): float32 ΔW goes through the
    float64 Gram matrix (faster and more accurate than float32 gesdd, see ``_svdvals_gram``)
    on CUDA, and on the CPU up to min(out, in) = ``_GRAM_VALUES_MAX_N``; larger float32 and
    all float64 ΔW
    through LAPACK gesdd (jobz='N'; gesvd on CUDA). With ``vectors > 0`` the top ``vectors``
    singular vectors are kept too: for float32 from the float64 Gram matrix's eigenvectors
    (``_svd_top_gram``: faster than float32 gesdd with vectors on the CPU, and
    float64-accurate) while σ_k ≥ 1e-3·σ_1, otherwise from a thin SVD (gesdd; gesvd on
    CUDA).

    Args:
        matrix: (out, in) ΔW; widened to float32 (float64 stays float64) before computing.
        vectors: Number k of top singular vectors to return (clipped to min(out, in)).
        device: ``"cpu"`` or ``"cuda[:N]"``; results always come back on the CPU.
        backend: ``"auto"`` (the measured pick), or force ``"gram"`` (float32 only; float64
            uses gesdd), ``"torch"`` (gesdd) or ``"scipy"`` (gesdd, CPU only; values only).

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
    k = min(vectors, m)
    # The Gram route serves a top-k (k < m): a whole basis (W0's left vectors for the base
    # metrics) needs σ_m ≥ 1e-3·σ_1 too, which weights rarely meet, so it would be computed
    # and then thrown away for gesdd.
    if k < m and _route(a, backend, vectors=True) == "gram":
        with contextlib.suppress(torch.linalg.LinAlgError):  # syevd failed: gesdd below
            top = _svd_top_gram(a, k)
            if top is not None:
                return _to_cpu(top)
    return _to_cpu(_svd_top(a, k))


_EPS32, _EPS64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
# The Gram route of a factored ΔW's values answers only while the relative rounding error it
# can add to the smallest σ stays this far below float32's half-ulp: its float32 values then
# round as those of the QR route do (within this fraction of an ulp), else the QR route serves.
GRAM_FACTORED_ULP_FRACTION = 1e-3


def _factored_values_gram(
    left: torch.Tensor, right: torch.Tensor, device: torch.device
) -> torch.Tensor | None:
    """σ(L R) of factors L (out, R), R (R, in), R ≤ min(out, in), from R × R float64 Grams.

    G_L = LᵀL = V Λ Vᵀ (syevd), W = V Λ^{1/2}; then eig(G_L G_R) = eig(W Wᵀ G_R) and
    σ_i² = λ_i(Wᵀ G_R W) (R × R, symmetric positive semi-definite), G_R = R Rᵀ. Eigenvalues of
    the Grams carry an absolute error of about R·ε₆₄·‖G_L‖₂‖G_R‖₂, so σ_i has a relative error
    of about R·ε₆₄·‖G_L‖₂‖G_R‖_F / (2σ_i²) (‖G_R‖₂ ≤ ‖G_R‖_F): the route answers only while
    that stays below ``GRAM_FACTORED_ULP_FRACTION`` of float32's half-ulp for the smallest σ.
    A NaN/inf factor makes a Gram diagonal NaN/inf (a sum of squares), which gives None too.
    On the CPU the products and the R × R work run through numpy (measured faster than torch
    for these shapes); on a GPU the products run there.

    Returns:
        (R,) σ descending, float64, on the CPU; or None (the caller takes the QR route).
    """
    if device.type == "cpu" and left.dtype in _NUMPY_FLOATS and right.dtype in _NUMPY_FLOATS:
        ln, rn = (t.detach().cpu().numpy().astype(np.float64) for t in (left, right))
        g_l, g_r = ln.T @ ln, rn @ rn.T  # (R, R) each
    else:
        lf, rt = (t.to(device=device, dtype=torch.float64) for t in (left, right))
        g_l, g_r = ((lf.T @ lf).cpu().numpy(), (rt @ rt.T).cpu().numpy())
    g_r_norm = float(np.linalg.norm(g_r))  # Frobenius; NaN/inf when a factor is
    if not (math.isfinite(g_r_norm) and math.isfinite(float(np.trace(g_l)))):
        return None
    lam, vecs = np.linalg.eigh(g_l)  # ascending
    w = vecs * np.sqrt(np.maximum(lam, 0.0))  # (R, R): W = V Λ^{1/2}, G_L = W Wᵀ
    sq = np.linalg.eigvalsh(w.T @ g_r @ w)[::-1]  # (R,) σ², descending
    bound = len(sq) * _EPS64 * float(lam[-1]) * g_r_norm  # absolute error of each σ²
    if not float(sq[-1]) * GRAM_FACTORED_ULP_FRACTION * _EPS32 >= bound:  # 2·rel err ≤ f·ε₃₂
        return None
    return torch.from_numpy(np.sqrt(sq))


# torch dtypes that have a numpy dtype (bfloat16 has none)
_NUMPY_FLOATS = frozenset({torch.float16, torch.float32, torch.float64})


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
    (MultiLoRA's n·r) and R = 0. Values only of a float32 ΔW with R ≤ min(out, in): from the
    R × R Gram matrices instead of the QRs while that is as accurate in float32
    (``_factored_values_gram``).

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
    if vectors <= 0 and dtype == torch.float32 and 0 < inner <= min(out, inp):
        values = _factored_values_gram(left, right, dev)  # None: not finite, or not accurate
        if values is not None:
            return values.to(dtype), None, None
    # The QRs and the small core are computed in float64 whatever ``dtype`` is: they cost
    # O((out + in)·R²), nothing next to a dense SVD, and the float32 results then no longer
    # depend on how many threads the BLAS split the products over.
    lf, rt = (t.to(device=dev, dtype=torch.float64) for t in (left, right))
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
        return _svdvals(core, "torch").to(dtype).cpu(), None, None
    s, u_c, v_c = _svd_top(core, min(vectors, m))  # u_c: (a, k), v_c: (b, k)
    return _to_cpu(tuple(t.to(dtype) for t in (s, q_u @ u_c, q_v @ v_c)))  # type: ignore[arg-type]


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
