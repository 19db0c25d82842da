"""Does a merged checkpoint contain this adapter, at the right scale?

Per adapted module, with D = W_merged − W0 and ΔW the adapter's update as spectra's loader
computes it (LoRA, DoRA, kohya, LyCORIS, MultiLoRA: the scaling rules included):

* c = ⟨D, ΔW⟩ / ‖ΔW‖²: the best scale (1 when the merge applied ΔW as is);
* residual = ‖D − ΔW‖ / ‖ΔW‖, and the residual after the best scale ‖D − c·ΔW‖ / ‖ΔW‖;
* tolerance = ``ROUNDING_MARGIN`` · ε/2 · (‖W_merged‖ + ‖ΔW‖) / ‖ΔW‖, ε the machine
  epsilon of MERGED's stored dtype (float32 for wider ones): storing W0 + ΔW rounds each
  element by at most ε/2 of its magnitude, and a merge computed in that dtype rounds ΔW too.

Verdicts, first that applies:

==================  ==========================================================================
``ok``              residual ≤ tolerance
``not_applied``     ‖D‖ / ‖ΔW‖ ≤ tolerance: the module is unchanged
``scale_mismatch``  residual after the best scale ≤ tolerance: ΔW merged × c (e.g. 0.5 when
                    α/r was lost, √r off under rsLoRA)
``other_change``    anything else: something besides c·ΔW changed the weight
==================  ==========================================================================

Matrices the adapter does not touch are ``unchanged`` when D is exactly 0, else ``changed``;
so are 1-D tensors (norms, biases), compared element by element. Memory: module by module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from spectra.errors import CheckpointMismatchError
from spectra.io import open_tensors
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream
from spectra.loaders import open_checkpoint
from spectra.loaders.align import align_modules
from spectra.loaders.base import LoadOptions
from spectra.loaders.full import FullReader

Verdict = Literal["ok", "scale_mismatch", "not_applied", "other_change", "changed", "unchanged"]
ADAPTER_VERDICTS: tuple[Verdict, ...] = ("ok", "scale_mismatch", "not_applied", "other_change")
# Storing W0 + ΔW rounds each element by at most ε/2 of its magnitude, and a merge computed in
# the stored dtype rounds ΔW once more: ‖error‖_F ≤ ε/2 · (‖W_merged‖ + ‖ΔW‖). The tolerance is
# this many times that bound.
ROUNDING_MARGIN = 4.0


@dataclass(frozen=True)
class ModuleCheck:
    """The verdict on one module (adapter modules: every number set; others: verdict only).

    Attributes:
        module: Module path (base name).
        verdict: See the module docstring.
        scale: c = ⟨D, ΔW⟩ / ‖ΔW‖² (None outside the adapter).
        residual: ‖D − ΔW‖ / ‖ΔW‖.
        scaled_residual: ‖D − c·ΔW‖ / ‖ΔW‖.
        tolerance: The rounding tolerance on the residuals.
        merged_dtype: MERGED's stored dtype of this tensor.
    """

    module: str
    verdict: Verdict
    scale: float | None = None
    residual: float | None = None
    scaled_residual: float | None = None
    tolerance: float | None = None
    merged_dtype: str | None = None


@dataclass
class VerifyResult:
    """Every module's check; ``adapter`` (in the adapter) and ``outside`` (not in it)."""

    adapter: list[ModuleCheck] = field(default_factory=list)
    outside: list[ModuleCheck] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.adapter + self.outside:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out


def check_module(
    delta: torch.Tensor, d: torch.Tensor, w_merged_norm: float, eps: float
) -> ModuleCheck:
    """The numbers and verdict of one module (``module`` left empty).

    Args:
        delta: (out, in) ΔW of the adapter.
        d: (out, in) W_merged − W0.
        w_merged_norm: ‖W_merged‖_F.
        eps: Machine epsilon of MERGED's stored dtype.
    """
    delta, d = delta.to(torch.float64), d.to(torch.float64)
    nd = float(torch.linalg.vector_norm(delta))
    if nd == 0.0:
        verdict: Verdict = "ok" if not bool(d.any()) else "other_change"
        return ModuleCheck("", verdict, None, None, None, None)
    c = float((d * delta).sum()) / nd**2
    residual = float(torch.linalg.vector_norm(d - delta)) / nd
    scaled = float(torch.linalg.vector_norm(d - c * delta)) / nd
    tol = ROUNDING_MARGIN * eps / 2 * (w_merged_norm + nd) / nd
    if residual <= tol:
        verdict = "ok"
    elif float(torch.linalg.vector_norm(d)) / nd <= tol:
        verdict = "not_applied"
    elif scaled <= tol:
        verdict = "scale_mismatch"
    else:
        verdict = "other_change"
    return ModuleCheck("", verdict, c, residual, scaled, tol)


def verify(
    base: Path, adapter: Path, merged: Path, *, options: LoadOptions = LoadOptions()
) -> VerifyResult:
    """Check every module of MERGED against BASE + ADAPTER (see the module docstring).

    Raises:
        CheckpointMismatchError: MERGED's shapes differ from BASE's, or an adapter module is
            missing from MERGED.
        SpectraError: Whatever the loaders refuse.
    """
    base_src, merged_src = open_tensors(base), open_tensors(merged)
    reader = open_checkpoint(adapter, base=base_src, options=options)
    merged_reader = FullReader(merged, base=base_src, options=options)
    merged_modules = {i.module: i for i in merged_reader.modules()}
    result = VerifyResult()
    adapted = [i.module for i in reader.modules()]
    missing = [m for m in adapted if m not in merged_modules]
    if missing:
        raise CheckpointMismatchError(
            f"{len(missing)} adapter modules have no weight in MERGED, e.g. {missing[0]!r}; "
            "pass the merged checkpoint of this base and adapter",
            path=merged,
        )
    for module in adapted:
        info = merged_modules[module]
        key = info.detail["tuned_key"]
        dtype = merged_src.dtype(key)
        eps = torch.finfo(dtype if dtype.itemsize <= 4 else torch.float32).eps
        w_norm = float(
            torch.linalg.vector_norm(TensorStream(merged_src).widened(key, torch.float64))
        )
        d = merged_reader.update(module).dense  # (out, in) W_merged − W0
        assert d is not None
        check = check_module(reader.update(module).materialize(), d, w_norm, eps)
        result.adapter.append(_named(check, module, str(dtype).removeprefix("torch.")))
    for module in sorted(set(merged_modules) - set(adapted)):
        d = merged_reader.update(module).dense
        assert d is not None
        result.outside.append(ModuleCheck(module, "changed" if bool(d.any()) else "unchanged"))
    result.outside += _vectors(merged_src, base_src)
    result.outside.sort(key=lambda c: c.module)
    return result


def _named(check: ModuleCheck, module: str, dtype: str) -> ModuleCheck:
    return ModuleCheck(
        module,
        check.verdict,
        check.scale,
        check.residual,
        check.scaled_residual,
        check.tolerance,
        dtype,
    )


def _vectors(merged: TensorSource, base: TensorSource) -> list[ModuleCheck]:
    """changed / unchanged for every 1-D tensor (norm scales, biases), by exact comparison."""
    merged_keys, base_keys = merged.keys(), base.keys()  # TensorSource is not iterable
    pairs = align_modules(
        [k for k in merged_keys if len(merged.shape(k)) == 1],
        [k for k in base_keys if len(base.shape(k)) == 1],
        path=merged.path,
        base_path=base.path,
    ).mapping
    checks = []
    for mkey, bkey in pairs.items():
        if merged.shape(mkey) != base.shape(bkey):
            raise CheckpointMismatchError(
                f"shape {merged.shape(mkey)} in MERGED but {base.shape(bkey)} in the base; "
                "pass the merged checkpoint of this base",
                path=merged.path,
                key=mkey,
            )
        same = torch.equal(merged.get(mkey).to(torch.float64), base.get(bkey).to(torch.float64))
        checks.append(ModuleCheck(bkey, "unchanged" if same else "changed"))
    return checks


def exit_verdicts(result: VerifyResult, fail_on: tuple[str, ...]) -> list[ModuleCheck]:
    """The checks whose verdict is in ``fail_on``."""
    return [c for c in result.adapter + result.outside if c.verdict in fail_on]
