"""Figure 7: the update against the base weight W0, per module and method.

Three panels sharing the module axis (sorted by layer, then module type):

1. amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F, U, V the top-r singular vectors of ΔW
   (LoRA paper, Sec. 7.3), log scale;
2. intruder dimensions: how many of the top-k left singular vectors of W0 + ΔW have
   max |cos| < ε against every left singular vector of W0 (Shuttleworth et al. 2024);
3. their share of the energy of W0 + ΔW's top-k.

k and ε are the analysis settings and appear in the title.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spectra.plots.data import ordered_modules
from spectra.plots.style import (
    legend_if_any,
    method_colors,
    new_figure,
    plain_log_y,
    short_module_label,
)

# (base_metrics key, y label, log y)
BASE_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("amplification", "amplification\n‖ΔW‖_F / ‖Uᵀ W₀ V‖_F (log)", True),
    ("intruder_count", "intruder dimensions\n(count in the top-k)", False),
    ("intruder_energy", "intruder energy share\nof the top-k", False),
)
_MAX_TICK_LABELS = 30


def base_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows that carry base-relative metrics."""
    return [row for row in result.get("modules", []) if row.get("base_metrics")]


def against_base_figure(result: dict[str, Any]) -> Figure | None:
    """Amplification factor and intruder dimensions per module, one marker series per method.

    Args:
        result: Analysis result.

    Returns:
        The figure (three panels, one line per method with base metrics in each), or None when
        no module has base metrics (no base given, or ``--no-base-metrics``).
    """
    rows = base_rows(result)
    if not rows:
        return None
    order = ordered_modules(rows)
    position = {module: i for i, module in enumerate(order)}
    colors = method_colors(result)
    fig, axes = new_figure(
        len(BASE_PANELS), 1, panel_size=(max(7.0, 0.22 * len(order)), 2.8), sharex=True
    )
    for ax, (key, ylabel, log_y) in zip((row[0] for row in axes), BASE_PANELS, strict=True):
        for label, color in colors.items():
            points = sorted(
                (position[r["module"]], r["base_metrics"][key])
                for r in rows
                if r["label"] == label and r["base_metrics"].get(key) is not None
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, marker="o", markersize=4, linestyle="none", color=color, label=label
                )
        if log_y:
            plain_log_y(ax)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=key == "intruder_count"))
        ax.set_ylabel(ylabel, fontsize="small")
        ax.set_xlim(-0.5, len(order) - 0.5)
    _module_ticks(axes[-1][0], rows, order)
    legend_if_any(axes[0][0], title="method")
    fig.suptitle(f"Update against the base weight W₀\n{_intruder_setting(result, rows)}")
    return fig


def _intruder_setting(result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """'intruders: top-k = 10, ε = 0.5' from the settings (the rows, if settings lack it)."""
    settings = result.get("settings", {})
    k = settings.get("intruder_k", rows[0]["base_metrics"].get("intruder_k"))
    eps = settings.get("intruder_eps", rows[0]["base_metrics"].get("intruder_eps"))
    return f"intruders: top-k = {k} singular vectors of W₀ + ΔW with max |cos| < ε = {eps}"


def _module_ticks(ax: Axes, rows: list[dict[str, Any]], order: list[str]) -> None:
    """Module names under the last panel when few enough to read, else the index."""
    if len(order) <= _MAX_TICK_LABELS:
        first = {}
        for r in rows:
            first.setdefault(r["module"], r)
        ax.set_xticks(np.arange(len(order)))
        ax.set_xticklabels(
            [short_module_label(first[m]) for m in order],
            rotation=60,
            ha="right",
            fontsize="x-small",
        )
        ax.set_xlabel("module (sorted by layer, then type)")
    else:
        ax.set_xlabel(f"module index (0..{len(order) - 1}, sorted by layer, then type)")
