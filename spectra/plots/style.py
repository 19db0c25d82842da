"""Shared look of every spectra figure: the palette, one colour per method, figure creation.

Colours come from the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), which
stays distinguishable under the common colour-vision deficiencies. A method keeps the colour of
its position in the result's ``inputs`` list in every figure, so "lora" is the same blue in the
histogram, the layer plot and the base-relative plot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import LogFormatter, MaxNLocator

# Okabe–Ito, reordered so the first methods get the most distinct hues; yellow (low contrast on
# white) and black (reserved for annotations) come last.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
# Beyond eight methods colours repeat; the line style then tells the cycles apart.
LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
ANNOTATION_COLOR = "#444444"
HEATMAP_CMAP = "viridis"  # perceptually uniform, colour-blind safe
DPI = 150


def method_labels(result: dict[str, Any]) -> list[str]:
    """Method labels in the result's input order (= legend order = colour order)."""
    return [inp["label"] for inp in result.get("inputs", [])]


def method_colors(result: dict[str, Any]) -> dict[str, str]:
    """Label → Okabe–Ito hex colour, by position in ``result["inputs"]``."""
    return {label: OKABE_ITO[i % len(OKABE_ITO)] for i, label in enumerate(method_labels(result))}


def method_linestyles(result: dict[str, Any]) -> dict[str, str]:
    """Label → line style; solid for the first eight methods, then the next style per cycle."""
    n = len(OKABE_ITO)
    return {
        label: LINESTYLES[(i // n) % len(LINESTYLES)]
        for i, label in enumerate(method_labels(result))
    }


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    panel_size: tuple[float, float] = (5.0, 3.6),
    sharex: bool = False,
) -> tuple[Figure, list[list[Axes]]]:
    """A figure of ``nrows × ncols`` panels, built without pyplot (no global state).

    Args:
        nrows: Panel rows.
        ncols: Panel columns.
        panel_size: (width, height) of one panel in inches.
        sharex: Share the x axis down each column (tick labels only on the bottom row).

    Returns:
        The figure (constrained layout) and its axes as a 2-D list ``axes[row][col]``.
    """
    width, height = panel_size
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex="col" if sharex else False)
    return fig, [list(row) for row in axes]


def legend_if_any(ax: Axes, **kwargs: Any) -> None:
    """Draw a legend when the axes holds labelled artists (avoids matplotlib's warning)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(frameon=False, fontsize="small", **kwargs)


def empty_panel(ax: Axes, message: str) -> None:
    """Mark a panel that has nothing to show, saying why."""
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        color=ANNOTATION_COLOR,
        fontsize="small",
        wrap=True,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def short_module_label(row: dict[str, Any]) -> str:
    """``L3 attention.self.query`` for a layered module (``decoder L3 ...`` in a model with
    several stacks), else the module path."""
    layer = row.get("layer")
    if layer is None:
        return row["module"]
    stack = row.get("stack", "")
    return f"{stack + ' ' if stack else ''}L{layer} {row.get('module_type', '')}"


# one marker per stack in per-layer figures (color and line style stay the method's)
STACK_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def integer_ticks(*axes: Axis) -> None:
    """Ticks at integers only (layer indices, k, module numbers)."""
    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def phi_image(ax: Axes, grid: np.ndarray, **kwargs: Any) -> AxesImage:
    """Draw a grid of φ values (k_a, k_b) on [0, 1] as a heat map: cell (i, j) centred on
    (j + 1, i + 1) (origin lower, half-integer extent), integer ticks.

    Args:
        ax: The panel.
        grid: (k_a, k_b) φ values; NaN cells stay blank.
        **kwargs: Further ``imshow`` settings (e.g. ``aspect``).

    Returns:
        The image (for a shared colour bar).
    """
    k_a, k_b = grid.shape
    image = ax.imshow(
        grid,
        origin="lower",
        vmin=0.0,
        vmax=1.0,
        cmap=HEATMAP_CMAP,
        extent=(0.5, k_b + 0.5, 0.5, k_a + 0.5),
        interpolation="nearest",
        **kwargs,
    )
    integer_ticks(ax.xaxis, ax.yaxis)
    return image


def plain_log_y(ax: Axes) -> None:
    """Log-scale y axis labelled 2, 5, 20 instead of 2×10⁰, 5×10⁰, 2×10¹ (minor ticks: a
    readable subset when the axis spans few decades, none otherwise)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1.2, 0.4)))
