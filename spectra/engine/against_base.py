"""ΔW measured against the base weight W0: relative size, amplification factor and intruder
dimensions.

W0 is widened to float32 (float64 when either operand is float64) before any arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spectra.engine.svd import Spectrum, compute_dtype, spectrum, svd_dense
from spectra.engine.top_singular import top_singular_value
from spectra.errors import CheckpointMismatchError
from spectra.update import ModuleUpdate

# Default r of the amplification factor for a dense ΔW (which has no inner rank): the LoRA
# paper reports r = 4 .. 64; 16 is the middle of that range and a common LoRA rank.
DENSE_AMPLIFICATION_RANK = 16


def common_dtype(W0: torch.Tensor, update: ModuleUpdate) -> torch.dtype:
    """The dtype W0 and ΔW are combined in: the wider of the two, at least float32."""
    return compute_dtype(torch.promote_types(compute_dtype(W0.dtype), update.dtype))


_common_dtype = common_dtype


def base_left_vectors(
    W0: torch.Tensor, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> torch.Tensor | None:
    """All m = min(out, in) left singular vectors of W0, (out, m), in ``dtype`` (on the CPU);
    None when W0 is not finite. Compute once per module and pass to
    :func:`intruder_dimensions` for every checkpoint compared against the same W0."""
    m = min(W0.shape)
    _, x, _ = svd_dense(W0.to(device="cpu", dtype=dtype), vectors=m, device=device)
    return x


def _check_shape(W0: torch.Tensor, update: ModuleUpdate) -> None:
    if tuple(W0.shape) != tuple(update.shape):
        raise CheckpointMismatchError(
            f"base weight has shape {tuple(W0.shape)} but ΔW has {tuple(update.shape)}; "
            "pass the base checkpoint the update was trained from",
            key=update.module,
        )


def amplification_factor(
    update: ModuleUpdate,
    W0: torch.Tensor,
    r: int | None = None,
    *,
    device: str | torch.device = "cpu",
    spec: Spectrum | None = None,
) -> float:
    """How much ΔW amplifies directions already in W0 (LoRA paper, Sec. 7.3 / App. H.4).

    ‖ΔW‖_F / ‖Uᵀ W0 V‖_F, with U: (out, r), V: (in, r) the top-r singular vectors of ΔW.

    Args:
        update: ΔW, (out, in).
        W0: (out, in) base weight (any float dtype; widened first).
        r: Number of top singular directions; default the inner rank of a factored update
            (min(R, out, in)), or ``DENSE_AMPLIFICATION_RANK`` (16) for a dense one; clipped
            to min(out, in).
        device: ``"cpu"`` or ``"cuda[:N]"`` for the SVD.
        spec: ΔW's exact spectrum with at least r singular vectors, when the caller already
            has it (the analysis does); decomposed here otherwise.

    Returns:
        The factor; 0.0 when ΔW == 0, inf when Uᵀ W0 V == 0, NaN when ΔW is not finite.

    Raises:
        CheckpointMismatchError: W0 and ΔW shapes differ.
    """
    _check_shape(W0, update)
    dtype = _common_dtype(W0, update)
    m = min(update.shape)
    default_r = update.inner_rank if update.factored else DENSE_AMPLIFICATION_RANK
    r = min(default_r if r is None else r, m)
    if spec is None or spec.U is None or spec.U.shape[1] < r:
        spec = spectrum(update.to(dtype=dtype), vectors=r, device=device)
    if not spec.finite or spec.U is None or spec.V is None:
        return math.nan
    delta_norm = float(torch.linalg.vector_norm(spec.values.double()))
    if delta_norm == 0.0:
        return 0.0
    u, v = spec.U[:, :r].to(dtype), spec.V[:, :r].to(dtype)  # (out, r), (in, r)
    projected = u.T @ W0.to(dtype=dtype, device="cpu") @ v  # (r, r)
    denom = float(torch.linalg.matrix_norm(projected.double()))
    return math.inf if denom == 0.0 else delta_norm / denom


@dataclass(frozen=True)
class BaseNorms:
    """The size of a base weight W0.

    Attributes:
        frobenius: ‖W0‖_F (exact, one pass, accumulated in float64).
        spectral: σ₁(W0) = ‖W0‖₂, by block Lanczos (:func:`top_singular_value`, relative
            tolerance ``TOP_SINGULAR_TOL``; a lower bound converging from below), not an SVD.
    """

    frobenius: float
    spectral: float


def base_norms(W0: torch.Tensor) -> BaseNorms:
    """‖W0‖_F and σ₁(W0) of an (out, in) weight (NaN when W0 is not finite)."""
    frobenius = float(torch.linalg.vector_norm(W0, dtype=torch.float64))
    spectral = top_singular_value(W0) if math.isfinite(frobenius) else math.nan
    return BaseNorms(frobenius=frobenius, spectral=spectral)


def relative_norms(
    delta_frobenius: float | None, delta_spectral: float | None, base: BaseNorms
) -> tuple[float | None, float | None]:
    """(‖ΔW‖_F / ‖W0‖_F, σ₁(ΔW) / σ₁(W0)): how large the update is next to the weight.

    A fine-tune moves weights by a small fraction of their size; two independently trained
    models differ by about √2 times it (‖A − B‖_F² ≈ ‖A‖_F² + ‖B‖_F² for unrelated A, B).
    None where a norm is missing or not finite, or W0 = 0.
    """

    def ratio(num: float | None, den: float) -> float | None:
        if num is None or not math.isfinite(num) or not math.isfinite(den) or den == 0.0:
            return None
        return num / den

    return ratio(delta_frobenius, base.frobenius), ratio(delta_spectral, base.spectral)


@dataclass(frozen=True)
class IntruderResult:
    """Intruder dimensions of W0 + ΔW (Shuttleworth et al. 2024, arXiv 2410.21228, Def. 3.1).

    Attributes:
        count: How many of the top-k left singular vectors of W0 + ΔW are intruders.
        energy_share: Σ σ_j² over the intruders / Σ σ_j² over all of W0 + ΔW: the share of
            the tuned matrix's energy carried by intruder directions.
        max_cos: (k,) for each top-k left singular vector y_j of W0 + ΔW, max_i |cos(y_j, x_i)|
            over all left singular vectors x_i of W0.
        indices: 0-based ranks j of the intruders among the top k.
        k: Number of top singular vectors examined (clipped to min(out, in)).
        eps: The threshold: y_j is an intruder when max_cos[j] < eps. Report it: in d
            dimensions even a random direction reaches max |cos| ≈ 1/√d.
        nonfinite: True when W0 + ΔW held NaN/inf (then count 0, energy_share NaN).
    """

    count: int
    energy_share: float
    max_cos: list[float]
    indices: list[int]
    k: int
    eps: float
    nonfinite: bool = False


def intruder_dimensions(
    W0: torch.Tensor,
    update: ModuleUpdate,
    *,
    k: int = 10,
    eps: float = 0.5,
    device: str | torch.device = "cpu",
    base_left: torch.Tensor | None = None,
) -> IntruderResult:
    """Count the top-k singular directions of W0 + ΔW that W0 does not have.

    y_j (j < k), a left singular vector of W_tuned = W0 + ΔW, is an intruder when
    max_i |y_jᵀ x_i| < eps over all left singular vectors x_i of W0.

    Args:
        W0: (out, in) base weight (widened to float32+ before adding ΔW).
        update: ΔW, (out, in); materialized here (W0 + ΔW is dense anyway).
        k: Number of top singular vectors of W_tuned examined (paper: 10).
        eps: Cosine threshold (paper sweeps it; 0.5 is common).
        device: ``"cpu"`` or ``"cuda[:N]"`` for the two SVDs.
        base_left: W0's left singular vectors from :func:`base_left_vectors` (same dtype), to
            skip recomputing them; computed here when None.

    Returns:
        An :class:`IntruderResult`.

    Raises:
        CheckpointMismatchError: W0 and ΔW shapes differ.
        ValueError: k < 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check_shape(W0, update)
    dtype = _common_dtype(W0, update)
    m = min(update.shape)
    k = min(k, m)
    base = W0.to(device="cpu", dtype=dtype)
    tuned = base + update.materialize().to(device="cpu", dtype=dtype)  # (out, in)
    x = base_left if base_left is not None else base_left_vectors(base, dtype, device)  # (out, m)
    s, y, _ = svd_dense(tuned, vectors=k, device=device)  # s: (m,), y: (out, k)
    if x is None or y is None:
        return IntruderResult(0, math.nan, [], [], k, eps, nonfinite=True)
    max_cos = (y.T @ x).abs().amax(dim=1).double()  # (k,)
    intruder = max_cos < eps
    sq = s.double() ** 2
    total = float(sq.sum())
    share = float(sq[:k][intruder].sum()) / total if total > 0 else 0.0
    return IntruderResult(
        count=int(intruder.sum()),
        energy_share=share,
        max_cos=max_cos.tolist(),
        indices=torch.nonzero(intruder).flatten().tolist(),
        k=k,
        eps=eps,
    )
