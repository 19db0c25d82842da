"""The work of one module: every checkpoint's ΔW of it, its spectrum and metrics, the pairwise
subspace similarity, and the measures against W0. Rows of :func:`spectra.analysis.analyze`'s
result.

This is what an executor (:mod:`spectra.parallel`) runs; it only needs a :class:`ModuleContext`
(the opened inputs) and a module name, and returns plain JSON-able rows. At most one ΔW per
checkpoint and one W0 are alive at a time, and each ΔW is released before the next is read.

Singular vectors cost about twice the values alone or more (eigenvectors of the Gram matrix
or a thin SVD, versus eigenvalues or gesdd with jobz='N'), so they are computed only when
something uses them: φ and principal angles
between two checkpoints that both have the module (``AnalysisOptions.similarity``). The
measures against W0 decompose ΔW themselves (spectra.engine.against_base).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spectra.engine.against_base import (
    DENSE_AMPLIFICATION_RANK,
    amplification_factor,
    base_left_vectors,
    common_dtype,
    intruder_dimensions,
)
from spectra.engine.metrics import dominance_metrics
from spectra.engine.randomized import randomized_svd, truncated_metrics
from spectra.engine.subspace import grassmann_distance, group_similarity, phi_grid, principal_angles
from spectra.engine.svd import Spectrum, spectrum
from spectra.io.source import TensorSource
from spectra.loaders.base import CheckpointReader
from spectra.loaders.stream import TensorStream
from spectra.update import ModuleUpdate

if TYPE_CHECKING:
    from spectra.analysis import AnalysisOptions

Rows = list[dict[str, Any]]


@dataclass
class Input:
    """One opened checkpoint: its label, the path the user gave, its reader."""

    label: str
    path: Path
    reader: CheckpointReader


@dataclass
class ModuleContext:
    """Everything the per-module work needs, opened in the process (thread) that runs it.

    Attributes:
        options: The analysis settings.
        device: Where the SVDs run.
        base: The base checkpoint, or None.
        inputs: The checkpoints, in the user's order.
        modules_of: label → the module names that checkpoint has.
    """

    options: AnalysisOptions
    device: torch.device
    base: TensorSource | None
    inputs: list[Input]
    modules_of: dict[str, set[str]]
    _base_stream: TensorStream | None = field(init=False, repr=False, default=None)
    _left_cache: tuple[tuple[str, torch.dtype], torch.Tensor | None] | None = field(
        init=False, repr=False, default=None
    )

    def __post_init__(self) -> None:
        self._base_stream = None if self.base is None else TensorStream(self.base)

    def base_left(self, module: str, w0: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """W0's left singular vectors, computed once per module and dtype and shared by every
        checkpoint compared against it (only the current module's are kept)."""
        key = (module, dtype)
        if self._left_cache is None or self._left_cache[0] != key:
            self._left_cache = (key, base_left_vectors(w0, dtype, self.device))
        return self._left_cache[1]

    def base_weight(self, module: str) -> torch.Tensor | None:
        """W0 of a module widened to the compute dtype, (out, in·kh·kw); None when the base is
        absent or lacks it. Streamed (no memory map left resident)."""
        key = module + ".weight"
        if self._base_stream is None or self.base is None or key not in self.base:
            return None
        if len(self.base.shape(key)) < 2:
            return None
        w0 = self._base_stream.widened(key, self.options.torch_dtype)
        # conv kernels are flattened like their ΔW: (out, in·kh·kw)
        return w0.reshape(w0.shape[0], -1)


def analyze_module(ctx: ModuleContext, module: str) -> tuple[Rows, Rows]:
    """The ``modules`` rows (one per checkpoint that has ``module``) and ``similarity`` rows
    (one per pair of them and side) of one module."""
    options = ctx.options
    present = [inp for inp in ctx.inputs if module in ctx.modules_of[inp.label]]
    w0 = ctx.base_weight(module) if options.against_base else None
    # singular vectors only when a pair will use them (else values only: much cheaper)
    vectors = options.top_k if options.similarity and len(present) > 1 else 0
    rows: Rows = []
    spectra_here: dict[str, Spectrum] = {}
    for inp in present:
        update = inp.reader.update(module)
        row, spec = _analyze_update(update, inp, w0, ctx, vectors)
        del update  # release this ΔW before reading the next checkpoint's
        rows.append(row)
        if spec is not None and vectors:
            spectra_here[inp.label] = spec
    similarity = _pair_similarity(module, present, spectra_here, options) if vectors else []
    return rows, similarity


def module_layer(module: str) -> tuple[int | None, str]:
    """Layer index and module type of a module path.

    The layer is the first all-digit path component; the type is the path after it
    (``encoder.layer.3.attention.self.query`` → (3, ``attention.self.query``)); a path with no
    digit component has layer None and is its own type.
    """
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            rest = ".".join(parts[i + 1 :])
            return int(part), rest or module
    return None, module


def module_cost(shape: tuple[int, int], rank: int | None) -> int:
    """Rough flop count of one ΔW's spectrum, for scheduling the largest work first:
    out·in·min(out, in) dense, (out + in)·R² factored."""
    out, inp = shape
    return out * inp * min(out, inp) if rank is None else (out + inp) * rank * rank


def _analyze_update(
    update: ModuleUpdate, inp: Input, w0: torch.Tensor | None, ctx: ModuleContext, vectors: int
) -> tuple[dict[str, Any], Spectrum | None]:
    """One row of ``modules`` and the spectrum (with top-k vectors when asked) of one ΔW."""
    layer, mtype = module_layer(update.module)
    row: dict[str, Any] = {
        "module": update.module,
        "label": inp.label,
        "kind": inp.reader.kind,
        "layer": layer,
        "module_type": mtype,
        "shape": list(update.shape),
        "rank": update.inner_rank,
        "notes": list(update.notes),
    }
    finite = _finite(update)
    spec = None
    base_ok = w0 is not None and tuple(w0.shape) == tuple(update.shape)
    if base_ok:  # one SVD serves φ and the amplification factor (its top-r vectors)
        vectors = max(vectors, amplification_rank(update))
    if finite:
        try:
            spec, metrics, truncated = _spectrum_and_metrics(update, ctx, vectors)
        except torch.linalg.LinAlgError:  # LAPACK did not converge (entries near float max)
            spec = None
    if spec is None or not bool(torch.isfinite(spec.values).all()):
        row.update(
            singular_values=[],
            structural_zeros=0,
            truncated=False,
            metrics=None,
            base_metrics=None,
            multilora=None,
            nonfinite=True,
        )
        why = (
            "ΔW has NaN/Inf entries"
            if not finite
            else f"the SVD of ΔW overflows {str(update.dtype).removeprefix('torch.')} (rerun "
            "with --dtype float64)"
        )
        row["notes"].append(f"{why}: left out of every mean and figure")
        return row, None
    row.update(
        singular_values=[float(v) for v in spec.values.tolist()],
        structural_zeros=int(spec.structural_zeros),
        truncated=truncated,
        metrics=jsonable(metrics),
        base_metrics=_base_metrics(update, w0, ctx, None if truncated else spec)
        if base_ok
        else None,
        multilora=_multilora_block(update) if update.groups else None,
        nonfinite=False,
    )
    if metrics.get("spectral_norm") == 0.0:
        row["notes"].append("ΔW = 0: this module did not change (metrics defined as 0, no φ)")
    if truncated:
        row["notes"].append(
            f"randomized SVD: top {len(spec.values)} singular values only (approximate); "
            "effective rank, entropy and numerical rank need the whole spectrum"
        )
    return row, spec


def _spectrum_and_metrics(
    update: ModuleUpdate, ctx: ModuleContext, vectors: int
) -> tuple[Spectrum, dict[str, Any], bool]:
    """(spectrum, metrics, truncated). Exact for factored updates and by default; with
    ``svd="randomized"`` a dense ΔW gets its approximate top-k and :func:`truncated_metrics`."""
    options = ctx.options
    if options.svd == "exact" or update.factored:
        spec = spectrum(update, vectors=vectors, device=ctx.device)
        return spec, dominance_metrics(spec, shape=update.shape), False
    assert update.dense is not None
    values, u, v = randomized_svd(
        update.dense,
        options.top_k,
        oversample=options.oversample,
        power_iters=options.power_iters,
        seed=options.seed,
        device=ctx.device,
    )
    frobenius = float(torch.linalg.matrix_norm(update.dense))  # exact ‖ΔW‖_F: the energy total
    # holds only the computed top k: full_size here is k (never written out as such)
    spec = Spectrum(
        values=values, full_size=len(values), structural_zeros=0, U=u, V=v, shape=update.shape
    )
    return spec, truncated_metrics(values, frobenius), True


def _finite(update: ModuleUpdate) -> bool:
    tensors = [update.dense] if update.dense is not None else [update.left, update.right]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def amplification_rank(update: ModuleUpdate) -> int:
    """r of the amplification factor: the inner rank of a factored update, 16 for a dense one
    (the engine's default), at most min(out, in)."""
    r = update.inner_rank if update.factored else DENSE_AMPLIFICATION_RANK
    return min(r, min(update.shape))


def _base_metrics(
    update: ModuleUpdate, w0: torch.Tensor, ctx: ModuleContext, spec: Spectrum | None
) -> dict[str, Any]:
    """Amplification factor (reusing ``spec``'s exact top-r vectors) and intruder dimensions
    (reusing W0's cached left singular vectors)."""
    options, device = ctx.options, ctx.device
    r = amplification_rank(update)
    amp = amplification_factor(update, w0, r, device=device, spec=spec)
    intr = intruder_dimensions(
        w0, update, k=options.intruder_k, eps=options.intruder_eps, device=device,
        base_left=ctx.base_left(update.module, w0, common_dtype(w0, update)),
    )  # fmt: skip
    return jsonable(
        {
            "amplification": amp,
            "amplification_r": r,
            "intruder_count": intr.count,
            "intruder_energy": intr.energy_share,
            "intruder_k": intr.k,
            "intruder_eps": intr.eps,
            "intruder_max_cos": [float(c) for c in intr.max_cos],
        }
    )


def _multilora_block(update: ModuleUpdate) -> dict[str, Any]:
    phi_left, phi_right = group_similarity(update)
    s = update.scaling
    block: dict[str, Any] = {
        "n": len(update.groups),
        "r": int(update.groups[0]),
        "phi_left": phi_left.tolist(),
        "phi_right": phi_right.tolist(),
        "scaling_norms": [],
        "scaling": [],
    }
    if s is not None:
        s64 = s.detach().to("cpu", torch.float64)
        norms = s64.reshape(len(update.groups), -1).norm(dim=1)
        block["scaling_norms"] = norms.tolist()
        block["scaling"] = s64.tolist()
    return jsonable(block)


def _pair_similarity(
    module: str, present: list[Input], spectra_here: dict[str, Spectrum], options: AnalysisOptions
) -> Rows:
    """φ grids, principal angles and Grassmann distance for every pair (a before b)."""
    rows = []
    labels = [i.label for i in present if i.label in spectra_here]
    for ia, a in enumerate(labels):
        for b in labels[ia + 1 :]:
            sa, sb = spectra_here[a], spectra_here[b]
            for side in ("left", "right"):
                ua = sa.U if side == "left" else sa.V
                ub = sb.U if side == "left" else sb.V
                if ua is None or ub is None:
                    continue
                k = min(options.top_k, _support(sa), _support(sb), ua.shape[1], ub.shape[1])
                if k < 1:
                    continue
                ua, ub = ua[:, :k], ub[:, :k]
                rows.append(
                    {
                        "module": module,
                        "a": a,
                        "b": b,
                        "side": side,
                        "k": k,
                        "phi": jsonable(phi_grid(ua, ub).tolist()),
                        "principal_angles": jsonable(principal_angles(ua, ub).tolist()),
                        "grassmann_distance": jsonable(float(grassmann_distance(ua, ub))),
                    }
                )
    return rows


def _support(spec: Spectrum) -> int:
    """Number of singular vectors that span ΔW's range (σ > 0): beyond it they are arbitrary."""
    vals = spec.values
    if vals.numel() == 0 or float(vals[0]) == 0.0:
        return 0
    size = min(spec.shape) if spec.shape is not None else spec.full_size
    tol = float(vals[0]) * max(size, 1) * torch.finfo(vals.dtype).eps
    return int((vals > tol).sum())


def jsonable(obj: Any) -> Any:
    """Recursively turn tensors/numpy scalars into Python numbers and NaN/Inf into None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj
