"""Figure 6 (MultiLoRA only): did the n parallel modules stay apart, and how are they scaled?

Per MultiLoRA input, one row of four panels:

1. and 2. the n × n inter-module similarity φ(k_i, k_j) of the left and right subspaces of
   each module's own ΔW_i, averaged over all adapted matrices (1 on the diagonal; near 1 off
   it means the modules collapsed onto the same directions);
3. the mean off-diagonal φ per layer (left and right), i.e. where collapse happens;
4. the learned scaling magnitudes ‖s_i‖₂ (over output channels; |s_i| for scalar scaling)
   per adapted matrix, one series per parallel module i.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from spectra.diagnose import mean_off_diagonal
from spectra.plots.data import as_grid, module_sort_key, nanmean_padded, stacks
from spectra.plots.style import (
    HEATMAP_CMAP,
    STACK_MARKERS,
    empty_panel,
    integer_ticks,
    legend_if_any,
    method_colors,
    new_figure,
    phi_image,
)

_SIDES = (("phi_left", "left (output)"), ("phi_right", "right (input)"))


def multilora_rows(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Label → its rows that carry a ``multilora`` block, sorted by layer then type."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in result.get("modules", []):
        if row.get("multilora") and not row.get("nonfinite"):
            out[row["label"]].append(row)
    return {label: sorted(rows, key=module_sort_key) for label, rows in out.items()}


def multilora_figure(result: dict[str, Any]) -> Figure | None:
    """Inter-module similarity and scaling magnitudes of every MultiLoRA input.

    Args:
        result: Analysis result.

    Returns:
        The figure (one row of four panels per MultiLoRA input), or None when no input is a
        MultiLoRA checkpoint.
    """
    groups = multilora_rows(result)
    if not groups:
        return None
    colors = method_colors(result)
    fig, axes = new_figure(len(groups), 4, panel_size=(3.9, 3.5))
    image = None
    for row_axes, (label, rows) in zip(axes, groups.items(), strict=True):
        for ax, (key, side) in zip(row_axes[:2], _SIDES, strict=True):
            image = _phi_heatmap(ax, [as_grid(r["multilora"][key]) for r in rows], label, side)
        _per_layer_collapse(row_axes[2], rows, label, colors.get(label, "#000000"))
        _scaling_panel(row_axes[3], rows, label)
    if image is not None:
        heatmaps = [ax for row in axes for ax in row[:2]]
        colorbar = fig.colorbar(image, ax=heatmaps, location="bottom", shrink=0.6)
        colorbar.set_label("φ between parallel modules i and j (0 orthogonal, 1 same subspace)")
    fig.suptitle("MultiLoRA: similarity of the parallel modules' subspaces, and their scaling")
    return fig


def _phi_heatmap(ax: Axes, grids: list[np.ndarray], label: str, side: str) -> AxesImage:
    image = phi_image(ax, nanmean_padded(grids))  # (n, n)
    ax.set_title(f"{label}: {side} φ\nmean over {len(grids)} matrices", fontsize="medium")
    ax.set_xlabel("parallel module j")
    ax.set_ylabel("parallel module i")
    return image


def _per_layer_collapse(ax: Axes, rows: list[dict[str, Any]], label: str, color: str) -> None:
    ax.set_title(f"{label}: inter-module φ per layer", fontsize="medium")
    layered = [r for r in rows if r.get("layer") is not None]
    if not layered:
        empty_panel(ax, "no layer index in the module names")
        return
    stack_names = stacks(layered)
    for (key, side), style in zip(_SIDES, ("-", "--"), strict=True):
        for i, stack in enumerate(stack_names):  # one line per stack: layer 3 of the encoder
            by_layer: dict[int, list[float]] = defaultdict(list)  # is not layer 3 of the decoder
            for r in layered:
                value = mean_off_diagonal(r["multilora"][key])
                if value is not None and r.get("stack", "") == stack:
                    by_layer[r["layer"]].append(value)
            if by_layer:
                layers = sorted(by_layer)
                means = [float(np.mean(by_layer[layer])) for layer in layers]
                marker = STACK_MARKERS[i % len(STACK_MARKERS)]
                name = side if not stack else f"{side} · {stack}"
                ax.plot(
                    layers, means, marker=marker, markersize=3, color=color, linestyle=style,
                    label=name,
                )  # fmt: skip
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("layer index")
    ax.set_ylabel("mean off-diagonal φ")
    integer_ticks(ax.xaxis)
    legend_if_any(ax)


def _scaling_panel(ax: Axes, rows: list[dict[str, Any]], label: str) -> None:
    ax.set_title(f"{label}: learned scaling per parallel module", fontsize="medium")
    norms = [r["multilora"].get("scaling_norms") or [] for r in rows]
    n = max((len(v) for v in norms), default=0)
    if n == 0:
        empty_panel(ax, "no scaling vectors stored")
        return
    cmap = colormaps[HEATMAP_CMAP]
    x = np.arange(len(rows))
    for i in range(n):
        ys = [v[i] if i < len(v) and v[i] is not None else np.nan for v in norms]
        ax.plot(
            x, ys, marker=".", linewidth=1.0, color=cmap(i / max(n - 1, 1)), label=f"module {i + 1}"
        )
    ax.set_xlabel("adapted matrix (sorted by layer, then type)")
    ax.set_ylabel("‖sᵢ‖₂ over output channels")
    integer_ticks(ax.xaxis)
    legend_if_any(ax, ncols=2 if n > 4 else 1)
