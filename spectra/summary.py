"""The ``summary`` rows of a result: per checkpoint, means over one documented set of modules.

Every mean is over the checkpoint's *changed* modules: finite ΔW that is not exactly zero
(``changed_modules`` of them). Unchanged modules (ΔW = 0: no direction, energy shares
undefined) and non-finite ones (NaN/Inf) are counted and listed beside the means, never
averaged in as zeros. Mean φ(k, k) against another checkpoint is over the modules where both
have a changed ΔW (φ is undefined elsewhere), with its count. Shares and φ are clipped to
[0, 1].

Computed from the ``modules`` and ``similarity`` rows alone (no tensors), so a saved result
can be summarised again.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from spectra.result_types import ModuleRow, PhiPair, SimilarityRow, SummaryRow

__all__ = ["is_changed", "is_unchanged", "summarize"]


def is_unchanged(row: ModuleRow) -> bool:
    """ΔW = 0: finite with σ_1 = 0 (or no singular value at all)."""
    metrics = row.get("metrics") or {}
    return not row.get("nonfinite") and bool(metrics) and metrics.get("spectral_norm") == 0.0


def is_changed(row: ModuleRow) -> bool:
    """In the means: finite metrics and ΔW ≠ 0."""
    return not row.get("nonfinite") and bool(row.get("metrics")) and not is_unchanged(row)


def summarize(
    *,
    inputs_meta: Sequence[tuple[str, str]],
    modules: Sequence[ModuleRow],
    similarity: Sequence[SimilarityRow],
) -> list[SummaryRow]:
    """Per method: module counts, means of the top-1 energy share, effective rank and stable
    rank over its changed modules, and mean φ(k, k) against each other method per side.

    Args:
        inputs_meta: (label, kind) per checkpoint, in order.
        modules: The result's ``modules`` rows.
        similarity: The result's ``similarity`` rows.

    Returns:
        One :class:`~spectra.result_types.SummaryRow` per checkpoint.
    """
    out: list[SummaryRow] = []
    for label, kind in inputs_meta:
        rows = [m for m in modules if m["label"] == label]
        changed = [m for m in rows if is_changed(m)]
        phis: dict[str, PhiPair] = {}
        for other, _ in inputs_meta:
            if other != label:
                left = _phi_kk(similarity, label, other, "left")
                right = _phi_kk(similarity, label, other, "right")
                phis[other] = PhiPair(
                    left=_mean(left, share=True), right=_mean(right, share=True), modules=len(left)
                )
        unchanged = [m["module"] for m in rows if is_unchanged(m)]
        nonfinite = [m["module"] for m in rows if m.get("nonfinite")]
        out.append(
            SummaryRow(
                label=label,
                kind=kind,
                modules=len(rows),
                changed_modules=len(changed),
                mean_top1_energy=_mean([_metric(m, "top1_energy") for m in changed], share=True),
                mean_effective_rank=_mean([_metric(m, "effective_rank") for m in changed]),
                mean_stable_rank=_mean([_metric(m, "stable_rank") for m in changed]),
                mean_k90=_mean([_metric(m, "k90") for m in changed]),
                mean_k95=_mean([_metric(m, "k95") for m in changed]),
                mean_k99=_mean([_metric(m, "k99") for m in changed]),
                mean_utilisation=_mean([_metric(m, "utilisation") for m in changed]),
                mean_phi=phis,
                nonfinite_modules=len(nonfinite),
                unchanged_modules=len(unchanged),
                unchanged=unchanged,
                nonfinite=nonfinite,
                **_relative_norms(changed),
            )
        )
    return out


def _relative_norms(changed: list[ModuleRow]) -> dict[str, float | None]:
    """Mean and median ‖ΔW‖_F / ‖W0‖_F and mean σ1(ΔW) / σ1(W0) over the changed modules;
    {} when no module has them (no base)."""
    rel = [v for v in (_metric(m, "relative_norm") for m in changed) if v is not None]
    spectral = [_metric(m, "relative_spectral_norm") for m in changed]
    if not rel:
        return {}
    return {
        "mean_relative_norm": _mean(rel),
        "median_relative_norm": statistics.median(float(v) for v in rel),
        "mean_relative_spectral_norm": _mean(spectral),
    }


def _metric(row: ModuleRow, name: str) -> Any:
    metrics = row.get("metrics") or {}
    return metrics.get(name)


def _phi_kk(similarity: Sequence[SimilarityRow], a: str, b: str, side: str) -> list[Any]:
    """φ(k, k) of every module's (a, b) pair on one side."""
    return [
        s["phi"][-1][-1] for s in similarity if s["side"] == side and {s["a"], s["b"]} == {a, b}
    ]


def _mean(values: list[Any], *, share: bool = False) -> float | None:
    """Mean of the finite values (None when there are none); a share is clipped to [0, 1]."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    mean = math.fsum(vals) / len(vals)
    return min(1.0, max(0.0, mean)) if share else mean
