"""The study's figures, drawn from ``study.json`` alone (each function returns a Figure).

* :func:`arms_figure`: per arm, the per-seed values (dots) and the mean with its 95 % t
  interval of the top-1 energy share, effective rank, φ(k, k) against full fine-tuning (left
  and right);
* :func:`histogram_figure`: the pooled spectrum histograms of full fine-tuning, LoRA and
  MultiLoRA over all seeds, on the linear σ/σ₁ axis and on the log axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spectra.study.extract import HIST_BINS, LOG_DECADES

_PANELS = (
    ("top1_energy", "top-1 energy share σ₁²/Σσ²"),
    ("effective_rank", "effective rank"),
    ("phi_left", "φ(k, k) vs full, left (k = rank)"),
    ("phi_right", "φ(k, k) vs full, right (k = rank)"),
)
_MAIN_COLORS = {"full": "#444444", "lora": "#d62728", "multilora": "#1f77b4"}


def arms_figure(result: dict[str, Any]) -> Figure:
    """Per-seed dots and mean ± 95 % interval per arm, one panel per number."""
    arms = [a for a in result["table"] if a != "full"]
    fig = Figure(figsize=(11.0, 2.2 + 0.32 * len(arms) * 2))
    axes = fig.subplots(2, 2, sharey=True)
    titles = [result["arms"][a]["title"] for a in arms]
    y = np.arange(len(arms))
    for ax, (name, label) in zip(axes.flat, _PANELS, strict=True):
        for i, arm in enumerate(arms):
            e = result["table"][arm].get(name)
            if not e:
                continue
            color = _MAIN_COLORS.get(arm, "#2ca02c")
            ax.plot(e["values"], [i] * len(e["values"]), "o", color=color, alpha=0.45, ms=4)
            if e["ci_low"] is not None:
                ax.plot([e["ci_low"], e["ci_high"]], [i, i], "-", color=color, lw=2)
            ax.plot([e["mean"]], [i], "|", color=color, ms=14, mew=2)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_yticks(y, titles)
    axes[0, 0].invert_yaxis()
    fig.suptitle("Per arm: seeds (dots), mean (bar) and 95 % t interval (line)")
    fig.tight_layout()
    return fig


def histogram_figure(result: dict[str, Any]) -> Figure:
    """Pooled histograms over all seeds, linear and log axis, full / LoRA / MultiLoRA."""
    fig = Figure(figsize=(11.0, 4.0))
    ax_lin, ax_log = fig.subplots(1, 2)
    edges_lin = np.linspace(0.0, 1.0, HIST_BINS + 1)
    edges_log = np.linspace(-LOG_DECADES, 0.0, HIST_BINS + 1)
    per_seed = result["histograms"].values()
    for arm, color in _MAIN_COLORS.items():
        hists = [h[arm] for h in per_seed if arm in h]
        if not hists:
            continue
        title = result["arms"][arm]["title"]
        lin = np.sum([h["linear"] for h in hists], axis=0).astype(np.float64)
        log = np.sum([h["log"] for h in hists], axis=0).astype(np.float64)
        ax_lin.stairs(lin, edges_lin, color=color, lw=1.6, label=title)
        share = log / log.sum() if log.sum() else log  # each method's own non-zero values
        ax_log.stairs(share, edges_log, color=color, lw=1.6, label=title)
    ax_lin.set_yscale("log")
    ax_lin.set_xlabel("σ / σ₁ (structural zeros in the first bin)")
    ax_lin.set_ylabel(f"count, pooled over modules and {len(per_seed)} seeds (log)")
    ax_log.set_xlabel("log10(σ / σ₁), non-zero values")
    ax_log.set_ylabel("share of the method's non-zero values")
    ax_lin.legend(title="method")
    fig.suptitle("Where the spectrum of ΔW lies: linear and log σ axis")
    fig.tight_layout()
    return fig


def study_figures(result: dict[str, Any]) -> dict[str, Figure]:
    """Name → figure (``study_arms``, ``study_histogram``)."""
    return {"study_arms": arms_figure(result), "study_histogram": histogram_figure(result)}
