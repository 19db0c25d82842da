"""Figure 5: dominance per layer — top-1 energy share, effective rank and k90 vs layer index.

One column per module type (``attention.self.query``, ``intermediate.dense``, ...), one line per
method and stack (an encoder–decoder model draws its encoder and its decoder as two lines,
told apart by their markers; never one line zigzagging across both). The numbers are the
analysis' per-module metrics, drawn as stored.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spectra.layout import natural_key
from spectra.plots.data import stacks
from spectra.plots.style import (
    STACK_MARKERS,
    integer_ticks,
    legend_if_any,
    method_colors,
    method_linestyles,
    new_figure,
    plain_log_y,
)

# (metric key, axis label, log y): the two rows of the figure
LAYER_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("top1_energy", "top-1 energy share σ₁² / Σ σᵢ²", False),
    ("effective_rank", "effective rank exp(H(σ / Σσ)) (log scale)", True),
    ("k90", "k90: directions for 90% of ‖ΔW‖²_F (log scale)", True),
)


def layered_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Finite rows with a layer index and metrics."""
    return [
        row
        for row in result.get("modules", [])
        if row.get("layer") is not None and not row.get("nonfinite") and row.get("metrics")
    ]


def module_types(rows: list[dict[str, Any]]) -> list[str]:
    """Distinct module types, in natural order."""
    return sorted({row["module_type"] for row in rows}, key=natural_key)


def layer_dominance_figure(result: dict[str, Any]) -> Figure | None:
    """Top-1 energy share (row 1), effective rank (row 2) and k90 (row 3: the smallest k whose
    top-k energy share is ≥ 0.9) vs layer, per module type.

    Args:
        result: Analysis result.

    Returns:
        The figure (one line per method with data in each panel), or None when no module has
        a layer index (e.g. a single matrix).
    """
    rows = layered_rows(result)
    if not rows:
        return None
    types = module_types(rows)
    colors, styles = method_colors(result), method_linestyles(result)
    stack_names = stacks(rows)
    markers = {st: STACK_MARKERS[i % len(STACK_MARKERS)] for i, st in enumerate(stack_names)}
    fig, axes = new_figure(len(LAYER_METRICS), len(types), panel_size=(3.8, 3.0))
    for col, mtype in enumerate(types):
        of_type = [r for r in rows if r["module_type"] == mtype]
        for row_i, (key, ylabel, log_y) in enumerate(LAYER_METRICS):
            ax = axes[row_i][col]
            for label in colors:
                for stack in stack_names:
                    _metric_line(
                        ax,
                        [r for r in of_type if r.get("stack", "") == stack],
                        label if not stack else f"{label} · {stack}",
                        label,
                        key,
                        color=colors[label],
                        linestyle=styles[label],
                        marker=markers[stack],
                    )
            if log_y:
                plain_log_y(ax)
            else:
                ax.set_ylim(0.0, 1.02)
            ax.set_xlabel("layer index")
            integer_ticks(ax.xaxis)
            if col == 0:
                ax.set_ylabel(ylabel)
            if row_i == 0:
                ax.set_title(mtype, fontsize="medium")
    legend_if_any(axes[0][0], title="method")
    fig.suptitle("Dominance of the top singular direction of ΔW, per layer and module type")
    return fig


def _metric_line(
    ax: Axes, rows: list[dict[str, Any]], name: str, label: str, key: str, **style: Any
) -> None:
    """One method's ``metrics[key]`` vs layer, over ``rows`` of one module type and stack;
    the line is called ``name``."""
    points = sorted(
        (r["layer"], r["metrics"][key])
        for r in rows
        if r["label"] == label and r["metrics"].get(key) is not None
    )
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, markersize=3, label=name, **style)
