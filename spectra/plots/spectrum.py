"""Figures 1–3: where the spectrum of each method's ΔW puts its mass.

1. histogram of σ/σ_1 over the full spectrum (structural zeros included), pooled over modules:
   the MultiLoRA paper's picture (full fine-tuning bell-shaped, LoRA at both ends);
2. normalized spectrum σ_k/σ_1 vs k, median over modules with the interquartile band (or one
   faint line per module), the LoRA/MultiLoRA inner rank marked;
3. cumulative energy Σ_{i≤k} σ_i² / Σ σ_i² vs k, likewise.

Every normalization is :mod:`spectra.engine` 's; this file only draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spectra.engine.histogram import log_spectrum_histogram, spectrum_histogram
from spectra.engine.metrics import cumulative_energy, normalized_spectrum
from spectra.plots.data import (
    factored_rank,
    full_values_tensor,
    ragged_quantiles,
    rows_by_label,
    values_tensor,
)
from spectra.plots.style import (
    legend_if_any,
    method_colors,
    method_linestyles,
    new_figure,
)

Show = Literal["median", "modules"]
_QUARTILES = (0.25, 0.5, 0.75)
_LOG_DECADES = 4.0  # the log σ axis of the histogram: [-4, 0] in log10(σ/σ₁)


def spectrum_histogram_figure(
    result: dict[str, Any],
    *,
    bins: int = 50,
    log_counts: bool = True,
    axis: Literal["linear", "log"] = "linear",
) -> Figure:
    """Histogram of σ/σ_1 over the full spectrum of every module, one series per method.

    For each method the full spectrum of each module — all min(out, in) singular values,
    the structural zeros of a factored update included — is divided by that module's σ_1 and
    the values of all its modules are pooled. Counts are per method (not normalized), so each
    series sums to Σ_modules min(out, in).

    Args:
        result: Analysis result (``spectra.analysis.analyze``).
        bins: Number of equal-width bins on [0, 1].
        log_counts: Log-scale count axis (the ends of a LoRA spectrum dwarf the middle).
        axis: ``"linear"``: σ/σ₁ on [0, 1], structural zeros in the first bin (the paper's
            axis). ``"log"``: log10(σ/σ₁) on [-4, 0], non-zero values only
            (:func:`spectra.engine.histogram.log_spectrum_histogram`), which shows the shape
            of a spectrum spanning decades.

    Returns:
        The figure: one ``stairs`` artist per method with modules to show.
    """
    fig, ax, methods = _methods_panel(result)
    for label, rows, style in methods:
        pairs = [(values_tensor(r), int(r.get("structural_zeros", 0))) for r in rows]
        if axis == "log":
            counts, edges, _below = log_spectrum_histogram(pairs, bins=bins, decades=_LOG_DECADES)
        else:
            counts, edges = spectrum_histogram(pairs, bins=bins)
        ax.stairs(
            np.asarray(counts, dtype=np.float64),
            np.asarray(edges, dtype=np.float64),
            linewidth=1.6,
            label=f"{label} ({len(rows)} modules)",
            **style,
        )
    if log_counts:
        ax.set_yscale("log")
    if axis == "log":
        ax.set_xlim(-_LOG_DECADES, 0.0)
        ax.set_xlabel("log10(σ / σ₁) (non-zero singular values)")
        ax.set_title("Histogram of the non-zero spectrum of ΔW, log σ axis")
    else:
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("σ / σ₁ (singular value over the module's largest)")
        ax.set_title("Histogram of the full spectrum of ΔW, structural zeros included")
    ax.set_ylabel("count (pooled over modules" + (", log scale)" if log_counts else ")"))
    legend_if_any(ax, title="method")
    return fig


def normalized_spectrum_figure(
    result: dict[str, Any], *, show: Show = "median", log_k: bool = True
) -> Figure:
    """Normalized spectrum σ_k/σ_1 vs k (log y), per method.

    ``show="median"``: the median over modules at each k with the interquartile band (a
    module contributes to k only if it has a k-th computed value); ``"modules"``: one faint
    line per module. A dotted vertical line marks each factored method's inner rank R (the
    LoRA rank r, or n·r for MultiLoRA): beyond it the spectrum is structurally zero.

    Args:
        result: Analysis result.
        show: ``"median"`` or ``"modules"``.
        log_k: Log-scale k axis (dense spectra are ~100× longer than LoRA ones).
    """
    fig, ax = _curve_figure(
        result,
        curve=lambda row: normalized_spectrum(values_tensor(row), "max"),
        show=show,
        log_k=log_k,
    )
    ax.set_yscale("log")
    ax.set_ylabel("σₖ / σ₁ (log scale)")
    ax.set_title("Normalized singular values of ΔW" + _show_suffix(show))
    return fig


def cumulative_energy_figure(
    result: dict[str, Any], *, show: Show = "median", log_k: bool = True
) -> Figure:
    """Cumulative energy Σ_{i≤k} σ_i² / Σ σ_i² vs k, per method.

    Computed over the full spectrum (min(out, in) values), so a rank-R update reaches 1 at
    k = R and stays there. Median and interquartile band over modules, or one line per module.

    Args:
        result: Analysis result.
        show: ``"median"`` or ``"modules"``.
        log_k: Log-scale k axis.
    """
    fig, ax = _curve_figure(
        result,
        curve=lambda row: cumulative_energy(full_values_tensor(row)),
        show=show,
        log_k=log_k,
    )
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("Σᵢ≤ₖ σᵢ² / Σ σᵢ² (energy share)")
    ax.set_title("Cumulative energy of ΔW's spectrum" + _show_suffix(show))
    return fig


def _show_suffix(show: Show) -> str:
    return " (median over modules, band: 25–75%)" if show == "median" else " (one line per module)"


def _curve_figure(
    result: dict[str, Any],
    *,
    curve: Callable[[dict[str, Any]], torch.Tensor],
    show: Show,
    log_k: bool,
) -> tuple[Figure, Axes]:
    """One panel, one curve family per method (``curve(row)``: (m,) values at k = 1..m)."""
    if show not in ("median", "modules"):
        raise ValueError(f"show must be 'median' or 'modules', got {show!r}")
    fig, ax, methods = _methods_panel(result)
    for label, rows, style in methods:
        curves = [curve(row).numpy() for row in rows]
        if show == "median":
            _median_band(ax, curves, label=f"{label} ({len(rows)} modules)", **style)
        else:
            _module_lines(ax, curves, label=f"{label} ({len(rows)} modules)", **style)
        rank = factored_rank(rows)
        if rank is not None:
            ax.axvline(
                rank,
                color=style["color"],
                linestyle=":",
                linewidth=1.2,
                label=f"{label}: inner rank R = {rank}",
            )
    if log_k:
        ax.set_xscale("log")
    ax.set_xlabel("k (singular value index, 1 = largest" + (", log scale)" if log_k else ")"))
    legend_if_any(ax, title="method")
    return fig, ax


def _methods_panel(
    result: dict[str, Any],
) -> tuple[Figure, Axes, list[tuple[str, list[dict[str, Any]], dict[str, str]]]]:
    """A one-panel figure, and (label, rows, {color, linestyle}) of each method with modules,
    in input order."""
    colors, styles = method_colors(result), method_linestyles(result)
    fig, axes = new_figure(panel_size=(7.0, 4.2))
    methods = [
        (label, rows, {"color": colors[label], "linestyle": styles[label]})
        for label, rows in rows_by_label(result).items()
        if rows
    ]
    return fig, axes[0][0], methods


def _median_band(ax: Axes, curves: list[np.ndarray], *, label: str, **style: Any) -> None:
    (q25, q50, q75), _ = ragged_quantiles(curves, _QUARTILES)
    k = np.arange(1, len(q50) + 1)
    q25, q50, q75 = (_positive(q) for q in (q25, q50, q75))
    ax.plot(k, q50, linewidth=1.8, label=label, **style)
    ax.fill_between(k, q25, q75, color=style["color"], alpha=0.2, linewidth=0)


def _module_lines(ax: Axes, curves: list[np.ndarray], *, label: str, **style: Any) -> None:
    for i, c in enumerate(curves):
        k = np.arange(1, len(c) + 1)
        ax.plot(
            k, _positive(c), linewidth=0.8, alpha=0.35, label=label if i == 0 else None, **style
        )


def _positive(values: np.ndarray) -> np.ndarray:
    """Zeros as NaN, so a log axis leaves a gap instead of clipping to the floor."""
    return np.where(values > 0, values, np.nan)
