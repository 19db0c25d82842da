"""Trajectory figures: how dominance and the top-k subspace develop over training steps.

Both take a :class:`~spectra.track.trajectory.Trajectory` and return a Figure:

* :func:`trajectory_figure`: four panels vs step, one line per module type (the mean over its
  layers): top-1 energy share, effective rank, φ(k, k) with the previous checkpoint and φ(k, k)
  with the last (left side solid, right side dashed);
* :func:`trajectory_heatmap_figure`: one metric as a layer × step heat map, one panel per
  module type.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spectra.plots.style import (
    ANNOTATION_COLOR,
    HEATMAP_CMAP,
    OKABE_ITO,
    empty_panel,
    integer_ticks,
    legend_if_any,
    new_figure,
)
from spectra.track.trajectory import Trajectory

# (metrics key, axis label)
METRIC_PANELS: tuple[tuple[str, str], ...] = (
    ("top1_energy", "top-1 energy share σ₁² / Σ σᵢ²"),
    ("effective_rank", "effective rank exp(H(σ / Σσ))"),
)
PHI_PANELS: tuple[tuple[str, str], ...] = (
    ("consecutive", "φ(k, k) with the previous checkpoint"),
    ("last", "φ(k, k) with the last checkpoint"),
)
HEATMAP_LABELS = {
    "top1_energy": "top-1 energy share",
    "effective_rank": "effective rank",
    "stable_rank": "stable rank",
    "k90": "k at 90 % energy",
}


def _types(traj: Trajectory) -> list[str]:
    return sorted({row["module_type"] for row in traj["modules"]})


def _value(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric) if metric == "k90" else (row.get("metrics") or {}).get(metric)
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _mean_by_step(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """(steps, mean value at each step), steps ascending."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for step, value in points:
        by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [float(np.mean(by_step[s])) for s in steps]


def trajectory_figure(traj: Trajectory) -> Figure:
    """Dominance metrics and subspace movement vs step, one line per module type.

    Args:
        traj: The trajectory.

    Returns:
        A 2 × 2 figure; a φ panel with nothing to show (one checkpoint) says so.
    """
    fig, axes = new_figure(2, 2, panel_size=(5.0, 3.4), sharex=True)
    types = _types(traj)
    colors = {t: OKABE_ITO[i % len(OKABE_ITO)] for i, t in enumerate(types)}
    for ax, (key, label) in zip(axes[0], METRIC_PANELS, strict=True):
        for mtype in types:
            points = [
                (row["step"], v)
                for row in traj["modules"]
                if row["module_type"] == mtype and (v := _value(row, key)) is not None
            ]
            if points:
                ax.plot(*_mean_by_step(points), marker="o", markersize=3, color=colors[mtype],
                        label=mtype)  # fmt: skip
        _step_axis(ax, label)
    for ax, (relation, label) in zip(axes[1], PHI_PANELS, strict=True):
        _phi_panel(ax, traj, relation, colors)
        _step_axis(ax, label)
        ax.set_ylim(0.0, 1.02)
    axes[0][0].set_ylim(0.0, 1.02)
    legend_if_any(axes[0][0], title="module type (mean over layers)")
    k = traj["settings"].get("top_k")
    fig.suptitle(f"Dominance and subspace movement over training (φ: top-k, k ≤ {k})")
    return fig


def _phi_panel(ax: Axes, traj: Trajectory, relation: str, colors: dict[str, str]) -> None:
    rows = [r for r in traj["phi"] if r["relation"] == relation]
    if not rows:
        empty_panel(ax, "φ needs two checkpoints or more")
        return
    for mtype, color in colors.items():
        for side, style in (("left", "-"), ("right", "--")):
            # consecutive: plotted at the later step; against the last: at the earlier one
            points = [
                (r["step_b"] if relation == "consecutive" else r["step_a"], r["phi"])
                for r in rows
                if r["module_type"] == mtype and r["side"] == side
            ]
            if points:
                ax.plot(*_mean_by_step(points), marker="o", markersize=3, color=color,
                        linestyle=style)  # fmt: skip
    for side, style in (("left (output side)", "-"), ("right (input side)", "--")):
        ax.plot([], [], color=ANNOTATION_COLOR, linestyle=style, label=side)  # legend key only
    legend_if_any(ax, loc="lower right")


def _step_axis(ax: Axes, ylabel: str) -> None:
    ax.set_xlabel("step")
    integer_ticks(ax.xaxis)
    ax.set_ylabel(ylabel, fontsize="small")


def trajectory_heatmap_figure(traj: Trajectory, metric: str = "top1_energy") -> Figure:
    """One metric as a layer × step heat map, one panel per module type.

    Args:
        traj: The trajectory.
        metric: ``top1_energy``, ``effective_rank``, ``stable_rank`` or ``k90``.

    Returns:
        The figure; cells without a value (module absent, ΔW = 0) are blank.

    Raises:
        ValueError: An unknown metric.
    """
    if metric not in HEATMAP_LABELS:
        raise ValueError(f"metric must be one of {', '.join(HEATMAP_LABELS)}, got {metric!r}")
    types = _types(traj)
    steps = [c["step"] for c in traj["checkpoints"]]
    fig, axes = new_figure(1, max(len(types), 1), panel_size=(3.6, 3.4))
    values = [v for row in traj["modules"] if (v := _value(row, metric)) is not None]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    image = None
    for ax, mtype in zip(axes[0], types, strict=False):
        rows = [r for r in traj["modules"] if r["module_type"] == mtype]
        layers = sorted({-1 if r["layer"] is None else r["layer"] for r in rows})
        grid = np.full((len(layers), len(steps)), np.nan)
        for r in rows:
            v = _value(r, metric)
            if v is not None:
                grid[
                    layers.index(-1 if r["layer"] is None else r["layer"]), steps.index(r["step"])
                ] = v
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap=HEATMAP_CMAP, vmin=vmin,
                          vmax=vmax, interpolation="nearest")  # fmt: skip
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize="x-small")
        ax.set_yticks(range(len(layers)), [str(v) if v >= 0 else "-" for v in layers])
        ax.set_xlabel("step")
        ax.set_ylabel("layer")
        ax.set_title(mtype, fontsize="medium")
    if image is not None:
        fig.colorbar(image, ax=axes[0], label=HEATMAP_LABELS[metric], shrink=0.9)
    fig.suptitle(f"{HEATMAP_LABELS[metric]} per layer and step")
    return fig


def trajectory_figures(traj: Trajectory) -> dict[str, Figure]:
    """Name → figure: ``trajectory`` and ``trajectory_heatmap`` (top-1 energy share)."""
    return {
        "trajectory": trajectory_figure(traj),
        "trajectory_heatmap": trajectory_heatmap_figure(traj, "top1_energy"),
    }
