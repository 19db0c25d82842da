"""Merged adapters: a full checkpoint whose weights already contain a LoRA.

Such a checkpoint *is* a full fine-tune (W_merged = W0 + s·B·A) and is read and analysed as
one. What gives it away is its spectrum: ΔW = W_merged − W0 is s·B·A (rank r ≪ min(out, in))
plus the rounding of the stored weights, a noise matrix E with entries up to half an ulp of
|W|. Its largest singular value is about ρ·eps·rms(W)·(√out + √in) (ρ ≈ 0.2-0.3 for
round-to-nearest; eps of the storage dtype: 2⁻⁷ for bf16, 2⁻¹⁰ for fp16, 2⁻²³ for float32).
In float32 this noise is far below any adapter; in bf16 / fp16 it fills the whole spectrum
after σ_r, so "rank" must mean *rank above the storage noise*:

* tolerance τ = eps(storage) · max(rms(W0), rms(W0 + ΔW)) · (√out + √in), eps of the coarser
  of the two checkpoints' stored dtypes: 3-5 times the noise's own σ₁, a margin;
  without the base weights at hand, the numerical-rank rule σ₁ · max(out, in) · eps(storage);
* the rank estimate looks for the **cliff**: the k ≤ :data:`LOW_RANK_FRACTION` · min(out, in)
  with the smallest σ_{k+1} / σ_k among those whose σ_{k+1} is at the noise level
  (≤ :data:`CLIFF_NOISE_SLACK` · τ). When that ratio is at most :data:`CLIFF_RATIO`, the rank is
  k; otherwise it is #{σ_i > τ} and there is no cliff.

**choice**: a module "looks like a merged adapter" when 0 < rank ≤ LOW_RANK_FRACTION · min(out,
in) and the spectrum has that cliff. ``spectra inspect CKPT --base BASE`` reports it in one line
per rank shared by such modules ("144 of 144 modules look like a rank-16 merged adapter");
the per-module rank is its table's "num. rank" column.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from spectra.engine.svd import spectrum
from spectra.io.source import TensorSource
from spectra.loaders.base import CheckpointReader, ModuleInfo

LOW_RANK_FRACTION = 0.25  # rank ≤ this · min(out, in) counts as ≪ min(out, in)
CLIFF_RATIO = 0.1  # σ_{k+1} / σ_k at most this: a cliff
CLIFF_NOISE_SLACK = 10.0  # the value after a cliff must be within this factor of the noise τ


@dataclass(frozen=True)
class RankCheck:
    """The rank above the storage noise of one module's ΔW.

    Attributes:
        module: Module name.
        shape: (out, in) of ΔW.
        numerical_rank: The estimate (cliff, else #{σ > tolerance}); None when ΔW is not
            finite.
        storage_dtype: The coarser stored dtype of the two checkpoints (its eps sets τ).
        tolerance: τ, the noise level below which singular values do not count.
        cliff: σ_{k+1} / σ_k at the estimated rank k when a cliff was found, else None.
    """

    module: str
    shape: tuple[int, int]
    numerical_rank: int | None
    storage_dtype: str = "float32"
    tolerance: float = 0.0
    cliff: float | None = None

    @property
    def low_rank(self) -> bool:
        """0 < rank ≤ LOW_RANK_FRACTION · min(out, in) at a cliff: a merged adapter."""
        r = self.numerical_rank
        return (
            r is not None
            and 0 < r <= LOW_RANK_FRACTION * min(self.shape)
            and (self.cliff is not None)
        )


def storage_eps(info: ModuleInfo) -> tuple[str, float]:
    """(dtype name, eps) of the coarser of the tuned and base stored dtypes (float32 when the
    reader does not say)."""
    names = [info.detail.get(k) for k in ("tuned_dtype", "base_dtype")]
    dtypes = [getattr(torch, n) for n in names if isinstance(n, str) and hasattr(torch, n)]
    dtypes = [d for d in dtypes if isinstance(d, torch.dtype) and d.is_floating_point]
    if not dtypes:
        return "float32", torch.finfo(torch.float32).eps
    coarse = max(dtypes, key=lambda d: torch.finfo(d).eps)
    return str(coarse).removeprefix("torch."), torch.finfo(coarse).eps


def estimate_rank(
    values: torch.Tensor, shape: tuple[int, int], tolerance: float
) -> tuple[int, float | None]:
    """(rank, cliff ratio or None) of a spectrum above a noise tolerance τ.

    Args:
        values: (m,) singular values, descending, m = min(out, in).
        shape: (out, in).
        tolerance: τ; singular values at or below it are noise.

    Returns:
        The k ≤ LOW_RANK_FRACTION · m minimising σ_{k+1} / σ_k among those with
        σ_{k+1} ≤ CLIFF_NOISE_SLACK · τ, with that ratio, when it is ≤ CLIFF_RATIO;
        otherwise (#{σ > τ}, None).
    """
    s = values.detach().to(torch.float64)
    above = int((s > tolerance).sum())
    if above == 0:
        return 0, None
    top = min(int(LOW_RANK_FRACTION * min(shape)), len(s) - 1)
    if top >= 1:
        ratios = s[1 : top + 1] / s[:top]  # ratios[k-1] = σ_{k+1} / σ_k, k = 1..top
        near_noise = s[1 : top + 1] <= CLIFF_NOISE_SLACK * tolerance
        ratios = torch.where(near_noise, ratios, torch.full_like(ratios, math.inf))
        k = int(torch.argmin(ratios)) + 1
        best = float(ratios[k - 1])
        if best <= CLIFF_RATIO:
            return k, best
    return above, None


def check_ranks(
    reader: CheckpointReader,
    modules: Iterable[str] | None = None,
    *,
    base: TensorSource | None = None,
) -> list[RankCheck]:
    """The rank above the storage noise of ΔW for each module (singular values only, one
    module at a time).

    Args:
        reader: An opened checkpoint (a full one with its base, for the merged-adapter check).
        modules: Module names to check (default: all of ``reader.modules()``).
        base: The base checkpoint, to size the rounding noise from rms(W0) and rms(W0 + ΔW);
            without it τ falls back to the numerical-rank rule in the storage eps.

    Returns:
        One :class:`RankCheck` per module, in the order given.
    """
    infos = {i.module: i for i in reader.modules()}
    names = list(infos) if modules is None else list(modules)
    checks = []
    for name in names:
        update = reader.update(name)
        dtype_name, eps = storage_eps(infos[name])
        spec = spectrum(update)
        if not spec.finite:
            checks.append(RankCheck(name, update.shape, None, dtype_name))
            continue
        values = spec.full()
        tol = _tolerance(values, update.dense, infos[name], base, eps)
        rank, cliff = estimate_rank(values, update.shape, tol)
        checks.append(RankCheck(name, update.shape, rank, dtype_name, tol, cliff))
    return checks


def _tolerance(
    values: torch.Tensor,
    delta: torch.Tensor | None,
    info: ModuleInfo,
    base: TensorSource | None,
    eps: float,
) -> float:
    """τ = eps · max(rms(W0), rms(W0 + ΔW)) · (√out + √in) with the base weight at hand, else
    σ₁ · max(out, in) · eps."""
    out, inp = info.shape
    key = info.detail.get("base_key")
    if base is None or delta is None or not isinstance(key, str) or key not in base:
        return float(values[0]) * max(out, inp) * eps if len(values) else 0.0
    w0 = base.get(key).to(torch.float64).reshape(out, -1)  # (out, in)
    n = out * inp
    rms0 = float(torch.linalg.vector_norm(w0)) / math.sqrt(n)
    rms1 = float(torch.linalg.vector_norm(w0 + delta.to(torch.float64))) / math.sqrt(n)
    return eps * max(rms0, rms1) * (math.sqrt(out) + math.sqrt(inp))


def merged_adapter_lines(checks: Sequence[RankCheck]) -> list[str]:
    """What to tell the user: one line per rank shared by merged-adapter-looking modules, one
    for modules whose ΔW is exactly zero; nothing for a (numerically) full-rank fine-tune."""
    ranks = Counter(c.numerical_rank for c in checks if c.low_rank)
    lines = []
    for rank, count in sorted(ranks.items(), key=lambda rc: (-rc[1], rc[0])):
        dtype = next(c.storage_dtype for c in checks if c.low_rank and c.numerical_rank == rank)
        lines.append(
            f"{count} of {len(checks)} modules look like a rank-{rank} merged adapter (ΔW has "
            f"a cliff after σ_{rank}, the rest at the {dtype} rounding level): weights with a "
            "LoRA folded in, analysed as the full fine-tune they are"
        )
    zero = [c for c in checks if c.numerical_rank == 0]
    if zero:
        noun = "module" if len(zero) == 1 else "modules"
        lines.append(f"ΔW is zero in {len(zero)} {noun} (unchanged), e.g. {zero[0].module!r}")
    return lines
