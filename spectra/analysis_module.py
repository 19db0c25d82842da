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
    BaseNorms,
    amplification_factor,
    base_left_vectors,
    base_norms,
    common_dtype,
    intruder_dimensions,
    relative_norms,
)
from spectra.engine.cache import LeftVectorCache, cache_dir
from spectra.engine.intruder_policy import plan_intruders
from spectra.engine.metrics import dominance_metrics
from spectra.engine.randomized import randomized_svd, truncated_metrics
from spectra.engine.subspace import grassmann_distance, group_similarity, phi_grid, principal_angles
from spectra.engine.svd import Spectrum, spectrum
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream
from spectra.layout import Position, module_layer, positions  # noqa: F401  (module_layer re-exported)
from spectra.loaders.base import CheckpointReader
from spectra.result_types import (
    BaseMetrics,
    Metrics,
    ModuleRow,
    MultiLoRABlock,
    SimilarityRow,
)
from spectra.update import ModuleUpdate

if TYPE_CHECKING:
    from spectra.analysis import AnalysisOptions

Rows = list[ModuleRow]
SimilarityRows = list[SimilarityRow]


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
    _norm_cache: tuple[str, BaseNorms] | None = field(init=False, repr=False, default=None)
    _disk_cache: LeftVectorCache = field(init=False, repr=False, default=LeftVectorCache(None))
    # module → (stack, layer, module type), stacks named against every checkpoint's modules
    positions: dict[str, Position] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = positions(set().union(*self.modules_of.values()))
        self._base_stream = None if self.base is None else TensorStream(self.base)
        self._disk_cache = LeftVectorCache(cache_dir() if self.options.cache else None)

    def base_left(self, module: str, w0: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """W0's left singular vectors, computed once per module and dtype and shared by every
        checkpoint compared against it (only the current module's are kept); read from and
        stored in the user's cache across runs (:mod:`spectra.engine.cache`)."""
        key = (module, dtype)
        if self._left_cache is None or self._left_cache[0] != key:
            w = w0.to(device="cpu", dtype=dtype)
            left = self._disk_cache.left_vectors(
                w, self.device.type, lambda: base_left_vectors(w, dtype, self.device)
            )
            self._left_cache = (key, left)
        return self._left_cache[1]

    def base_norms(self, module: str, w0: torch.Tensor) -> BaseNorms:
        """‖W0‖_F and σ₁(W0) of a module, computed once and shared by its checkpoints."""
        if self._norm_cache is None or self._norm_cache[0] != module:
            self._norm_cache = (module, base_norms(w0))
        return self._norm_cache[1]

    def base_shape(self, module: str) -> tuple[int, int] | None:
        """(out, in·kh·kw) of a module's W0 from the header; None when absent or not ≥ 2-D."""
        key = module + ".weight"
        if self.base is None or key not in self.base:
            return None
        shape = tuple(self.base.shape(key))
        if len(shape) < 2:
            return None
        return shape[0], math.prod(shape[1:])

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


def analyze_module(ctx: ModuleContext, module: str) -> tuple[Rows, SimilarityRows]:
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


def module_cost(shape: tuple[int, int], rank: int | None) -> int:
    """Rough flop count of one ΔW's spectrum, for scheduling the largest work first:
    out·in·min(out, in) dense, (out + in)·R² factored."""
    out, inp = shape
    return out * inp * min(out, inp) if rank is None else (out + inp) * rank * rank


def _analyze_update(
    update: ModuleUpdate, inp: Input, w0: torch.Tensor | None, ctx: ModuleContext, vectors: int
) -> tuple[ModuleRow, Spectrum | None]:
    """One row of ``modules`` and the spectrum (with top-k vectors when asked) of one ΔW."""
    notes = list(update.notes)
    # a factored ΔW's SVD checks its factors itself (NaN values when they are not finite), so
    # they are scanned here only when its spectrum is not finite, to word the note
    finite = update.factored or _finite(update)
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
        finite = finite and _finite(update)
        why = (
            "ΔW has NaN/Inf entries"
            if not finite
            else f"the SVD of ΔW overflows {str(update.dtype).removeprefix('torch.')} (rerun "
            "with --dtype float64)"
        )
        notes.append(f"{why}: left out of every mean and figure")
        position = ctx.positions[update.module]
        row = _module_row(update, inp, position, notes, singular_values=[], structural_zeros=0)
        return row, None
    base_metrics = None
    if base_ok:
        assert w0 is not None
        base_metrics = _base_metrics(update, w0, ctx, None if truncated else spec)
        metrics = _with_relative_norms(metrics, update, w0, ctx)
    if metrics.get("spectral_norm") == 0.0:
        notes.append("ΔW = 0: this module did not change (metrics defined as 0, no φ)")
    if truncated:
        notes.append(
            f"randomized SVD: top {len(spec.values)} singular values only (approximate); "
            "effective rank, entropy and numerical rank need the whole spectrum"
        )
    row = _module_row(
        update,
        inp,
        ctx.positions[update.module],
        notes,
        singular_values=[float(v) for v in spec.values.tolist()],
        structural_zeros=int(spec.structural_zeros),
        truncated=truncated,
        metrics=jsonable(metrics),
        base_metrics=base_metrics,
        multilora=_multilora_block(update) if update.groups else None,
    )
    return row, spec


def _module_row(
    update: ModuleUpdate,
    inp: Input,
    position: Position,
    notes: list[str],
    *,
    singular_values: list[float],
    structural_zeros: int,
    truncated: bool = False,
    metrics: Metrics | None = None,
    base_metrics: BaseMetrics | None = None,
    multilora: MultiLoRABlock | None = None,
) -> ModuleRow:
    """The ``modules`` row of one ΔW; without ``metrics`` the row of a non-finite one."""
    return ModuleRow(
        module=update.module,
        label=inp.label,
        kind=inp.reader.kind,
        stack=position.stack,
        layer=position.layer,
        module_type=position.module_type,
        shape=list(update.shape),
        rank=update.inner_rank,
        notes=notes,
        singular_values=singular_values,
        structural_zeros=structural_zeros,
        truncated=truncated,
        metrics=metrics,
        base_metrics=base_metrics,
        multilora=multilora,
        nonfinite=metrics is None,
    )


def _spectrum_and_metrics(
    update: ModuleUpdate, ctx: ModuleContext, vectors: int
) -> tuple[Spectrum, dict[str, Any], bool]:
    """(spectrum, metrics, truncated). Exact for factored updates and by default; with
    ``svd="randomized"`` a dense ΔW gets its approximate top-k and :func:`truncated_metrics`."""
    options = ctx.options
    if options.svd == "exact" or update.factored:
        spec = spectrum(update, vectors=vectors, device=ctx.device)
        inner = update.inner_rank if update.factored else None  # R of an adapter
        return spec, dominance_metrics(spec, shape=update.shape, inner_rank=inner), False
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
) -> BaseMetrics:
    """Amplification factor (reusing ``spec``'s exact top-r vectors) and, when this run computes
    them (:mod:`spectra.engine.intruder_policy`), intruder dimensions (reusing W0's cached left
    singular vectors); without them the intruder fields are absent."""
    options, device = ctx.options, ctx.device
    r = amplification_rank(update)
    amp = amplification_factor(update, w0, r, device=device, spec=spec)
    out = BaseMetrics(amplification=amp, amplification_r=r)
    if plan_intruders(options.intruders, [update.shape]).run:
        intr = intruder_dimensions(
            w0, update, k=options.intruder_k, eps=options.intruder_eps, device=device,
            base_left=ctx.base_left(update.module, w0, common_dtype(w0, update)),
        )  # fmt: skip
        out.update(
            intruder_count=intr.count,
            intruder_energy=intr.energy_share,
            intruder_k=intr.k,
            intruder_eps=intr.eps,
            intruder_max_cos=[float(c) for c in intr.max_cos],
        )
    return jsonable(out)


def _with_relative_norms(
    metrics: dict[str, Any], update: ModuleUpdate, w0: torch.Tensor, ctx: ModuleContext
) -> dict[str, Any]:
    """``metrics`` plus ``relative_norm`` = ‖ΔW‖_F / ‖W0‖_F and ``relative_spectral_norm`` =
    σ₁(ΔW) / σ₁(W0) (σ₁(W0) iterative: :func:`spectra.engine.against_base.base_norms`)."""
    rel, rel_spectral = relative_norms(
        metrics.get("frobenius_norm"), metrics.get("spectral_norm"),
        ctx.base_norms(update.module, w0),
    )  # fmt: skip
    return {**metrics, "relative_norm": rel, "relative_spectral_norm": rel_spectral}


def _multilora_block(update: ModuleUpdate) -> MultiLoRABlock:
    phi_left, phi_right = group_similarity(update)
    s = update.scaling
    block = MultiLoRABlock(
        n=len(update.groups),
        r=int(update.groups[0]),
        phi_left=phi_left.tolist(),
        phi_right=phi_right.tolist(),
        scaling_norms=[],
        scaling=[],
    )
    if s is not None:
        s64 = s.detach().to("cpu", torch.float64)
        norms = s64.reshape(len(update.groups), -1).norm(dim=1)
        block["scaling_norms"] = norms.tolist()
        block["scaling"] = s64.tolist()
    return jsonable(block)


def _pair_similarity(
    module: str, present: list[Input], spectra_here: dict[str, Spectrum], options: AnalysisOptions
) -> SimilarityRows:
    """φ grids, principal angles and Grassmann distance for every pair (a before b)."""
    rows: SimilarityRows = []
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
                    SimilarityRow(
                        module=module,
                        a=a,
                        b=b,
                        side=side,
                        k=k,
                        phi=jsonable(phi_grid(ua, ub).tolist()),
                        principal_angles=jsonable(principal_angles(ua, ub).tolist()),
                        grassmann_distance=jsonable(float(grassmann_distance(ua, ub))),
                    )
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
