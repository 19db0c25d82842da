"""Can these adapters be used together? The spectrum of their weighted sum, module by module.

Stacking adapters 1..n with weights w_i applies ΔW_sum = Σ w_i ΔW_i. When their top singular
directions line up on both sides, the top singular values add up (a spike: the sum does more
along one direction than any adapter alone); when they are orthogonal, σ_1 of the sum is the
largest σ_1 of the parts. Per module common to all adapters:

* the spectrum of ΔW_sum, exact: factored updates stay factored (the factors concatenated,
  [w_1 L_1, …, w_n L_n] · [R_1; …; R_n], :func:`~spectra.engine.svd.svd_factored`), any dense
  one makes the sum dense;
* spike = σ_1(ΔW_sum) / max_i σ_1(w_i ΔW_i): 2 for two identical adapters, 1 for orthogonal
  ones, 0 for an adapter and its negative;
* φ (LoRA paper, Sec. 7.2) between every pair, on the left (output) and right (input) side:
  ``phi_top`` = φ(1, 1), the squared cosine of the top directions, and ``phi_k`` = φ(k, k)
  with k = min(``PHI_K``, the pair's ranks); the largest over pairs is reported.

Verdict (**choice**, thresholds below): ``interfering`` when spike ≥ ``SPIKE_INTERFERING``
(the top directions add up by a quarter or more), ``cancelling`` when spike ≤
``SPIKE_CANCELLING``, else ``independent``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from spectra.engine.subspace import phi_grid
from spectra.engine.svd import Spectrum, spectrum, svd_dense, svd_factored
from spectra.errors import CheckpointMismatchError, OptionError
from spectra.io import open_tensors
from spectra.loaders import open_checkpoint
from spectra.update import ModuleUpdate

SPIKE_INTERFERING = 1.25
SPIKE_CANCELLING = 0.8
PHI_K = 8
TOP_VALUES = 8  # singular values of the sum kept in the result

StackVerdict = Literal["interfering", "independent", "cancelling"]


@dataclass(frozen=True)
class StackCheck:
    """One module of the stack.

    Attributes:
        module: Module path.
        shape: (out, in).
        sigma1_sum: σ_1(Σ w_i ΔW_i).
        sigma1_parts: σ_1(w_i ΔW_i) per adapter.
        spike: sigma1_sum / max(sigma1_parts) (None when every part is zero).
        phi_top_left, phi_top_right: Largest φ(1, 1) over pairs, output / input side.
        phi_k_left, phi_k_right: Largest φ(k, k) over pairs.
        verdict: See the module docstring.
        top_values: The top singular values of the sum.
    """

    module: str
    shape: tuple[int, int]
    sigma1_sum: float
    sigma1_parts: tuple[float, ...]
    spike: float | None
    phi_top_left: float
    phi_top_right: float
    phi_k_left: float
    phi_k_right: float
    verdict: StackVerdict
    top_values: tuple[float, ...]


def stack(
    adapters: Sequence[Path], *, base: Path | None = None, weights: Sequence[float] | None = None
) -> tuple[list[StackCheck], list[str]]:
    """Check every module the adapters share (see the module docstring).

    Args:
        adapters: Two or more checkpoints spectra reads.
        base: The base model (DoRA and saved modules need it; names are aligned to it).
        weights: w_i per adapter (default all 1).

    Returns:
        (one check per shared module, sorted; modules found in only some adapters).

    Raises:
        OptionError: Fewer than two adapters, or a weight count that differs.
        CheckpointMismatchError: A shared module's shape differs between adapters.
    """
    if len(adapters) < 2:
        raise OptionError("stack needs at least two adapters")
    w = [1.0] * len(adapters) if weights is None else list(weights)
    if len(w) != len(adapters):
        raise OptionError(f"--weights has {len(w)} values for {len(adapters)} adapters")
    base_src = open_tensors(base) if base is not None else None
    readers = [open_checkpoint(a, base=base_src) for a in adapters]
    names = [{i.module for i in r.modules()} for r in readers]
    shared = sorted(set.intersection(*names))
    partial = sorted(set.union(*names) - set(shared))
    checks = []
    for module in shared:
        parts = [r.update(module) for r in readers]
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            raise CheckpointMismatchError(
                f"module {module!r} has shapes {sorted(shapes)} in the different adapters; "
                "they are not adapters of the same base model",
                key=module,
            )
        checks.append(check_stack(module, parts, w))
    return checks, partial


def check_stack(module: str, parts: Sequence[ModuleUpdate], weights: Sequence[float]) -> StackCheck:
    """The stack numbers of one module from its updates and weights."""
    scaled = [_scaled(p, wi) for p, wi in zip(parts, weights, strict=True)]
    specs = [spectrum(p, vectors=PHI_K) for p in scaled]
    s_sum = _sum_values(scaled)
    sigma_parts = tuple(float(s.values[0]) if len(s.values) else 0.0 for s in specs)
    top = max(sigma_parts)
    sigma_sum = float(s_sum[0]) if len(s_sum) else 0.0
    spike = sigma_sum / top if top > 0 else None
    phis = [_phis(a, b) for a, b in itertools.combinations(specs, 2)]
    best = [max(p[i] for p in phis) for i in range(4)]
    return StackCheck(
        module=module,
        shape=parts[0].shape,
        sigma1_sum=sigma_sum,
        sigma1_parts=sigma_parts,
        spike=spike,
        phi_top_left=best[0],
        phi_top_right=best[1],
        phi_k_left=best[2],
        phi_k_right=best[3],
        verdict=_verdict(spike),
        top_values=tuple(float(v) for v in s_sum[:TOP_VALUES]),
    )


def _verdict(spike: float | None) -> StackVerdict:
    if spike is not None and spike >= SPIKE_INTERFERING:
        return "interfering"
    if spike is not None and spike <= SPIKE_CANCELLING:
        return "cancelling"
    return "independent"


def _scaled(update: ModuleUpdate, w: float) -> ModuleUpdate:
    """w·ΔW (the weight folded into the left factor, or into the dense matrix)."""
    if update.factored:
        assert update.left is not None
        return ModuleUpdate(update.module, update.shape, left=w * update.left, right=update.right)
    assert update.dense is not None
    return ModuleUpdate(update.module, update.shape, dense=w * update.dense)


def _sum_values(parts: Sequence[ModuleUpdate]) -> torch.Tensor:
    """Singular values of Σ parts: factors concatenated when all are factored, else dense."""
    if all(p.factored for p in parts):
        left = torch.cat([p.left for p in parts], 1)  # type: ignore[misc]  # (out, ΣR)
        right = torch.cat([p.right for p in parts], 0)  # type: ignore[misc]  # (ΣR, in)
        return svd_factored(left, right)[0]
    dense = sum(p.materialize().to(torch.float32) for p in parts)
    return svd_dense(dense)[0]  # type: ignore[arg-type]


def _phis(a: Spectrum, b: Spectrum) -> tuple[float, float, float, float]:
    """(φ_top left, φ_top right, φ_k left, φ_k right) of two spectra with vectors."""
    if a.U is None or b.U is None or a.V is None or b.V is None:
        return (0.0, 0.0, 0.0, 0.0)
    k = min(PHI_K, a.U.shape[1], b.U.shape[1], int((a.values > 0).sum()), int((b.values > 0).sum()))
    if k == 0:
        return (0.0, 0.0, 0.0, 0.0)
    left = phi_grid(a.U[:, :k], b.U[:, :k])
    right = phi_grid(a.V[:, :k], b.V[:, :k])
    return (
        float(left[0, 0]),
        float(right[0, 0]),
        float(left[k - 1, k - 1]),
        float(right[k - 1, k - 1]),
    )
