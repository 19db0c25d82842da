"""Figure 5: top-1 energy share, effective rank and k90 per layer, one column per module type."""

from __future__ import annotations

import numpy as np
from result_factory import LORA_VALUES, TYPES

from spectra.plots import layer_dominance_figure
from spectra.plots.style import method_colors


def test_panels_lines_and_values(result):
    fig = layer_dominance_figure(result)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 3 * len(TYPES)
    assert sorted({ax.get_title() for ax in panels if ax.get_title()}) == sorted(TYPES)
    colors = method_colors(result)
    sq = np.array(LORA_VALUES) ** 2
    for i, ax in enumerate(panels):  # row-major: row i // len(TYPES)
        assert [ln.get_label() for ln in ax.lines] == ["full", "lora", "multilora"]
        for line in ax.lines:
            np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
            assert line.get_color() == colors[line.get_label()]
        lora = ax.lines[1].get_ydata()
        if i // len(TYPES) == 0:  # top-1 energy share
            assert ax.get_yscale() == "linear"
            np.testing.assert_allclose(lora, sq[0] / sq.sum(), rtol=1e-14)
        elif i // len(TYPES) == 2:  # k90: 64 / 65.3125 ≥ 0.9 already at k = 1
            np.testing.assert_array_equal(lora, [1, 1, 1])
        else:  # effective rank exp(−Σ p log p), p = σ / Σσ
            p = np.array(LORA_VALUES) / sum(LORA_VALUES)
            np.testing.assert_allclose(lora, np.exp(-(p * np.log(p)).sum()), rtol=1e-14)
    ylabels = [ax.get_ylabel() for ax in panels if ax.get_ylabel()]
    assert any("top-1 energy" in y for y in ylabels) and any("effective rank" in y for y in ylabels)
    assert any(y.startswith("k90") for y in ylabels)
    assert all(ax.get_xlabel() == "layer index" for ax in panels)


def test_modules_without_layer_give_none(result):
    for row in result["modules"]:
        row["layer"] = None
    assert layer_dominance_figure(result) is None
