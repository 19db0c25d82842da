"""The MultiLoRA paper's "democratization" figures, drawn from an analysis result.

Every function takes the JSON-able result of ``spectra.analysis.analyze`` (or a saved
``spectra compare --json`` file) and returns a matplotlib :class:`~matplotlib.figure.Figure`
built with the explicit figure/axes API — no pyplot state, nothing shown. Figures that need
data the result lacks (no method pair, no MultiLoRA input, no base metrics) return None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from spectra.plots.base import against_base_figure
from spectra.plots.layers import layer_dominance_figure
from spectra.plots.multilora import multilora_figure
from spectra.plots.output import render_figure, save_figures
from spectra.plots.spectrum import (
    cumulative_energy_figure,
    normalized_spectrum_figure,
    spectrum_histogram_figure,
)
from spectra.plots.style import method_colors
from spectra.plots.subspace import subspace_similarity_figure

# name (also the file stem) → (builder, caption); in the order the report shows them
FIGURES: dict[str, tuple[Callable[[dict[str, Any]], Figure | None], str]] = {
    "fig1_histogram": (
        spectrum_histogram_figure,
        "Histogram of σ/σ₁ over the full spectrum of every module (structural zeros of "
        "factored updates included), pooled per method.",
    ),
    "fig2_normalized_spectrum": (
        normalized_spectrum_figure,
        "Normalized singular values σₖ/σ₁: median over modules with the 25–75% band; dotted "
        "lines mark the inner rank R of factored updates.",
    ),
    "fig3_cumulative_energy": (
        cumulative_energy_figure,
        "Cumulative energy share Σᵢ≤ₖ σᵢ² / Σ σᵢ²: how many directions carry the update.",
    ),
    "fig4_subspace_similarity": (
        subspace_similarity_figure,
        "Subspace similarity φ(i, j) of the top singular vectors of each pair of methods, "
        "left and right, averaged over modules.",
    ),
    "fig5_layer_dominance": (
        layer_dominance_figure,
        "Top-1 energy share and effective rank per layer, one panel per module type.",
    ),
    "fig6_multilora": (
        multilora_figure,
        "MultiLoRA: similarity of the parallel modules' subspaces and their learned scaling.",
    ),
    "fig7_against_base": (
        against_base_figure,
        "Against the base weight W₀: amplification factor and intruder dimensions per module.",
    ),
}


def all_figures(result: dict[str, Any]) -> dict[str, Figure]:
    """Every figure the result has data for, by name (see :data:`FIGURES`), in order.

    Args:
        result: Analysis result.

    Returns:
        Name → figure; figures whose builder returns None are omitted.
    """
    figures = {}
    # Labels and module names come from files: "$...$" in them must stay text, not mathtext
    # (a malformed formula would fail the whole figure). Tick labels, made while drawing
    # (output.py), keep mathtext for the log axes' 10^k.
    with matplotlib.rc_context({"text.parse_math": False}):
        for name, (build, _caption) in FIGURES.items():
            fig = build(result)
            if fig is not None:
                figures[name] = fig
    return figures


__all__ = [
    "FIGURES",
    "against_base_figure",
    "all_figures",
    "cumulative_energy_figure",
    "layer_dominance_figure",
    "method_colors",
    "multilora_figure",
    "normalized_spectrum_figure",
    "render_figure",
    "save_figures",
    "spectrum_histogram_figure",
    "subspace_similarity_figure",
]
