"""Picking rows out of an analysis result and aggregating ragged per-module curves for plotting.

Nothing here computes a spectral quantity: normalizations and energies come from
:mod:`spectra.engine.metrics`; this file only selects, orders and summarizes across modules
(median and quartiles of curves of different lengths).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from spectra.layout import natural_key
from spectra.plots.style import method_labels


def spectrum_rows(result: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """Rows of ``label`` whose spectrum can be normalized: finite, with σ_1 > 0.

    Non-finite updates (NaN/Inf in ΔW) and zero updates (σ_1 = 0: σ/σ_1 undefined) are left
    out of every spectrum figure; the report's module table still lists them.
    """
    return [
        row
        for row in result.get("modules", [])
        if row["label"] == label
        and not row.get("nonfinite")
        and row.get("singular_values")
        and row["singular_values"][0] is not None
        and row["singular_values"][0] > 0
    ]


def rows_by_label(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Label → :func:`spectrum_rows`, in input order."""
    return {label: spectrum_rows(result, label) for label in method_labels(result)}


def values_tensor(row: dict[str, Any]) -> torch.Tensor:
    """(m,) float64 singular values of one row (the computed ones, structural zeros excluded)."""
    return torch.tensor(row["singular_values"], dtype=torch.float64)


def full_values_tensor(row: dict[str, Any]) -> torch.Tensor:
    """(min(out, in),) float64 full spectrum of one row: the computed values, then the
    ``structural_zeros`` zeros a factored update has beyond its inner rank."""
    values = values_tensor(row)
    return torch.cat([values, values.new_zeros(int(row.get("structural_zeros", 0)))])


def factored_rank(rows: Sequence[dict[str, Any]]) -> int | None:
    """The most common inner rank R among factored rows (R < min(out, in)), or None.

    A LoRA of rank r gives R = r; a MultiLoRA of n modules of rank r gives R = n·r.
    Ties go to the smallest R.
    """
    ranks = [row["rank"] for row in rows if row["rank"] < min(row["shape"])]
    if not ranks:
        return None
    counts = Counter(ranks)
    best = max(counts.values())
    return min(r for r, c in counts.items() if c == best)


def ragged_quantiles(
    curves: Sequence[np.ndarray], quantiles: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-index quantiles over curves of different lengths.

    Curve c contributes to index k only when len(c) > k (shorter curves simply end there).

    Args:
        curves: 1-D arrays, one per module.
        quantiles: Quantile levels in [0, 1], e.g. (0.25, 0.5, 0.75).

    Returns:
        (len(quantiles), K) quantile values, K = the longest curve; and (K,) the number of
        curves present at each index.
    """
    if not curves:
        return np.empty((len(quantiles), 0)), np.empty(0, dtype=int)
    length = max(len(c) for c in curves)
    stack = np.full((len(curves), length), np.nan)  # (modules, K), NaN where a curve has ended
    for i, c in enumerate(curves):
        stack[i, : len(c)] = c
    present = np.sum(~np.isnan(stack), axis=0)
    return np.nanquantile(stack, quantiles, axis=0), present


def nanmean_padded(grids: Sequence[np.ndarray]) -> np.ndarray:
    """Elementwise mean of 2-D grids of different sizes; a cell averages the grids that have it.

    Args:
        grids: (k_a, k_b) arrays (e.g. φ grids of one method pair over modules).

    Returns:
        (max k_a, max k_b) mean; NaN only where no grid has the cell.
    """
    rows = max(g.shape[0] for g in grids)
    cols = max(g.shape[1] for g in grids)
    stack = np.full((len(grids), rows, cols), np.nan)  # (modules, k_a, k_b)
    for i, g in enumerate(grids):
        stack[i, : g.shape[0], : g.shape[1]] = g
    counts = np.sum(~np.isnan(stack), axis=0)
    sums = np.nansum(stack, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def as_grid(values: Any) -> np.ndarray:
    """A JSON list of lists (None for NaN) as a float64 2-D array."""
    return np.array(
        [[np.nan if v is None else float(v) for v in row] for row in values], dtype=np.float64
    ).reshape(len(values), -1)


def module_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Order modules by stack, then layer (unlayered last), then module type, then path in
    natural order (block.2 before block.10)."""
    layer = row.get("layer")
    return (
        row.get("stack", ""),
        layer is None,
        -1 if layer is None else layer,
        natural_key(row.get("module_type", "")),
        natural_key(row["module"]),
    )


def stacks(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Distinct ``stack`` values of ``rows`` ("" for single-stack models and older files), in
    order of first appearance."""
    return list(dict.fromkeys(row.get("stack", "") for row in rows))


def ordered_modules(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Distinct module paths of ``rows`` in :func:`module_sort_key` order."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row["module"], row)
    return [row["module"] for row in sorted(first.values(), key=module_sort_key)]
