"""Figure 4: subspace similarity φ(i, j) between every pair of methods, left and right.

φ(i, j) = ‖U_aᵀ[:, :i] U_b[:, :j]‖_F² / min(i, j) ∈ [0, 1] (LoRA paper, Sec. 7.2): 1 when one
top subspace contains the other, 0 when they are orthogonal. The grids come from the analysis
(``result["similarity"]``); here they are averaged over modules and drawn with a fixed 0..1
colour range, so panels compare directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spectra.plots.data import as_grid, nanmean_padded
from spectra.plots.style import method_labels, new_figure, phi_image

SIDES = ("left", "right")
_SIDE_NAMES = {"left": "left (output) subspace, U", "right": "right (input) subspace, V"}


def method_pairs(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(a, b) pairs that have similarity rows, in input order of a then b."""
    order = {label: i for i, label in enumerate(method_labels(result))}
    pairs = {(row["a"], row["b"]) for row in result.get("similarity", [])}
    return sorted(pairs, key=lambda p: (order.get(p[0], len(order)), order.get(p[1], len(order))))


def mean_phi_grid(result: dict[str, Any], a: str, b: str, side: str) -> tuple[np.ndarray, int]:
    """φ(i, j) of ``a`` vs ``b`` on one side, averaged over modules.

    Grids of different k (cut per module to the singular vectors both updates have) are
    averaged cell by cell over the modules that have the cell.

    Returns:
        (k_max, k_max) mean grid, ``grid[i-1, j-1]`` = mean φ(i, j); and the module count.
    """
    grids = [
        as_grid(row["phi"])
        for row in result.get("similarity", [])
        if row["a"] == a and row["b"] == b and row["side"] == side and row.get("phi")
    ]
    if not grids:
        return np.empty((0, 0)), 0
    return nanmean_padded(grids), len(grids)


def subspace_similarity_figure(result: dict[str, Any]) -> Figure | None:
    """Heatmaps of module-averaged φ(i, j): one row per method pair, columns left / right.

    Args:
        result: Analysis result with ``similarity`` rows.

    Returns:
        The figure (one ``AxesImage`` per panel, colour range fixed to [0, 1], one shared
        colorbar), or None when the result has no method pair.
    """
    pairs = method_pairs(result)
    if not pairs:
        return None
    fig, axes = new_figure(len(pairs), len(SIDES), panel_size=(4.2, 3.8))
    image = None
    for row_axes, (a, b) in zip(axes, pairs, strict=True):
        for ax, side in zip(row_axes, SIDES, strict=True):
            grid, n_modules = mean_phi_grid(result, a, b, side)
            ax.set_title(
                f"{a} vs {b}: {_SIDE_NAMES[side]}\nmean over {n_modules} modules", fontsize="medium"
            )
            if n_modules == 0:
                ax.set_axis_off()
                continue
            image = phi_image(ax, grid, aspect="auto")  # cell (i, j) centred on (j, i)
            ax.set_xlabel(f"j (top-j singular vectors of {b})")
            ax.set_ylabel(f"i (top-i singular vectors of {a})")
    if image is not None:
        colorbar = fig.colorbar(image, ax=[ax for row in axes for ax in row], shrink=0.8)
        colorbar.set_label("φ(i, j) = ‖Uᵢᵀ Uⱼ‖²_F / min(i, j)  (0 orthogonal, 1 contained)")
    fig.suptitle("Subspace similarity of the top singular vectors of ΔW")
    return fig
