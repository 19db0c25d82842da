"""Figures 1–3 show what the spectra are: counts, curves and rank markers from chosen values."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch
from result_factory import LORA_R, LORA_VALUES, ML_N, ML_R, TYPES

from spectra.plots import (
    cumulative_energy_figure,
    normalized_spectrum_figure,
    spectrum_histogram_figure,
)
from spectra.plots.style import method_colors

N_MODULES = 6  # 3 layers × 2 module types
FULL = 48  # min(out, in) of every module type
assert all(min(shape) == FULL for shape in TYPES.values())


def _stairs(fig) -> dict[str, StepPatch]:
    ax = fig.axes[0]
    return {p.get_label().split(" ")[0]: p for p in ax.patches if isinstance(p, StepPatch)}


def _method_lines(ax) -> dict[str, Line2D]:
    """Median lines by method (rank markers are labelled 'label: inner rank ...')."""
    return {ln.get_label().split(" ")[0]: ln for ln in ax.lines if " modules)" in ln.get_label()}


def test_histogram_counts_pool_full_spectra_with_structural_zeros(result):
    fig = spectrum_histogram_figure(result, bins=50)
    stairs = _stairs(fig)
    assert list(stairs) == ["full", "lora", "multilora"]
    for patch in stairs.values():
        counts = patch.get_data().values
        assert counts.sum() == N_MODULES * FULL  # every σ of the full spectrum, zeros included
    # lora: σ/σ_1 = 1, 1/8, 1/16, 1/32 per module; bin width 0.02; 44 structural zeros each
    lora = np.asarray(stairs["lora"].get_data().values)
    expected = np.zeros(50)
    expected[0] = N_MODULES * (FULL - LORA_R)
    for ratio in np.array(LORA_VALUES) / LORA_VALUES[0]:
        expected[min(int(ratio / 0.02), 49)] += N_MODULES
    np.testing.assert_array_equal(lora, expected)
    np.testing.assert_allclose(stairs["lora"].get_data().edges, np.linspace(0, 1, 51))


def test_histogram_log_axis_counts_non_zero_values_per_decade(result):
    fig = spectrum_histogram_figure(result, bins=40, axis="log")
    ax = fig.axes[0]
    assert "log10(σ / σ₁)" in ax.get_xlabel() and ax.get_xlim() == (-4.0, 0.0)
    # lora: log10 of σ/σ_1 = 1, 1/8, 1/16, 1/32 per module; bins of 0.1 on [-4, 0]; no zeros
    lora = np.asarray(_stairs(fig)["lora"].get_data().values)
    expected = np.zeros(40)
    for ratio in np.array(LORA_VALUES) / LORA_VALUES[0]:
        expected[min(int((np.log10(ratio) + 4.0) / 0.1), 39)] += N_MODULES
    np.testing.assert_array_equal(lora, expected)


def test_histogram_axes_legend_and_colors(result):
    fig = spectrum_histogram_figure(result)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert "σ / σ₁" in ax.get_xlabel() and "count" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{m} ({N_MODULES} modules)" for m in ("full", "lora", "multilora")]
    colors = method_colors(result)
    for label, patch in _stairs(fig).items():
        assert patch.get_edgecolor()[:3] == pytest.approx(_rgb(colors[label]))
    assert spectrum_histogram_figure(result, log_counts=False).axes[0].get_yscale() == "linear"


def test_normalized_spectrum_median_and_rank_markers(result):
    fig = normalized_spectrum_figure(result)
    ax = fig.axes[0]
    lines = _method_lines(ax)
    assert list(lines) == ["full", "lora", "multilora"]
    np.testing.assert_allclose(lines["lora"].get_ydata(), np.array(LORA_VALUES) / 8.0, rtol=1e-15)
    np.testing.assert_array_equal(lines["lora"].get_xdata(), np.arange(1, LORA_R + 1))
    # full: the median over modules of σ_k/σ_1, against a float64 numpy reference
    full_rows = [r for r in result["modules"] if r["label"] == "full"]
    stack = np.array([np.array(r["singular_values"]) / r["singular_values"][0] for r in full_rows])
    np.testing.assert_allclose(lines["full"].get_ydata(), np.median(stack, axis=0), rtol=1e-12)
    markers = {
        ln.get_label(): ln.get_xdata()[0] for ln in ax.lines if "inner rank" in ln.get_label()
    }
    assert markers == {"lora: inner rank R = 4": LORA_R, "multilora: inner rank R = 4": ML_N * ML_R}
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 3  # one IQR band each


def test_normalized_spectrum_per_module_lines(result):
    ax = normalized_spectrum_figure(result, show="modules", log_k=False).axes[0]
    spectrum_lines = [ln for ln in ax.lines if "inner rank" not in ln.get_label()]
    assert len(spectrum_lines) == 3 * N_MODULES
    assert ax.get_xscale() == "linear"
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_cumulative_energy_reaches_one_at_the_rank(result):
    ax = cumulative_energy_figure(result).axes[0]
    lines = _method_lines(ax)
    lora = lines["lora"].get_ydata()
    assert len(lora) == FULL  # over the full spectrum
    sq = np.array(LORA_VALUES) ** 2
    np.testing.assert_allclose(lora[:LORA_R], np.cumsum(sq) / sq.sum(), rtol=1e-15)
    np.testing.assert_allclose(lora[LORA_R:], 1.0, rtol=1e-15)
    for line in lines.values():
        assert line.get_ydata()[-1] == pytest.approx(1.0, abs=1e-12)
        assert np.all(np.diff(line.get_ydata()) >= -1e-15)
    assert "energy" in ax.get_ylabel()


def test_bad_show_option(result):
    with pytest.raises(ValueError, match="show"):
        normalized_spectrum_figure(result, show="mean")


def test_zero_and_nonfinite_modules_are_left_out(result):
    rows = [r for r in result["modules"] if r["label"] == "lora"]
    rows[0]["singular_values"] = [0.0] * LORA_R  # a zero update: σ/σ_1 undefined
    rows[1]["nonfinite"], rows[1]["singular_values"] = True, []
    stairs = _stairs(spectrum_histogram_figure(result))
    assert stairs["lora"].get_label() == "lora (4 modules)"
    assert stairs["lora"].get_data().values.sum() == 4 * FULL


def _rgb(hex_color: str) -> tuple[float, float, float]:
    return tuple(int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))
