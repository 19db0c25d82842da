"""Figure 7: amplification factor and intruder dimensions per module and method."""

from __future__ import annotations

import numpy as np

from spectra.plots import against_base_figure
from spectra.plots.style import method_colors


def test_none_without_base_metrics(plain_result):
    assert against_base_figure(plain_result) is None


def test_three_panels_one_series_per_method_with_base(result):
    fig = against_base_figure(result)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 3
    title = fig.get_suptitle()
    assert "ε = 0.5" in title and "top-k = 10" in title
    colors = method_colors(result)
    for ax in panels:  # multilora has no base metrics in the fixture
        assert [ln.get_label() for ln in ax.lines] == ["full", "lora"]
        assert all(ln.get_color() == colors[ln.get_label()] for ln in ax.lines)
        np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(6))
    amp, count, energy = panels
    assert amp.get_yscale() == "log" and "amplification" in amp.get_ylabel()
    # modules sort by layer then type, which is the order they were built in: amp = 2 + mi
    np.testing.assert_allclose(amp.lines[0].get_ydata(), 2.0 + np.arange(6))
    np.testing.assert_allclose(amp.lines[1].get_ydata(), 20.0 + np.arange(6))
    np.testing.assert_array_equal(count.lines[1].get_ydata(), 2)
    np.testing.assert_allclose(energy.lines[1].get_ydata(), 0.3)
    labels = [t.get_text() for t in energy.get_xticklabels()]
    assert labels[0] == "L0 attention.query" and labels[-1] == "L2 mlp.dense"
