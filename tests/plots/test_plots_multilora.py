"""Figure 6: inter-module φ of MultiLoRA's parallel modules and their scaling magnitudes."""

from __future__ import annotations

import numpy as np
import pytest

from spectra.plots import multilora_figure


def test_none_without_multilora(plain_result):
    assert multilora_figure(plain_result) is None


def test_heatmaps_per_layer_collapse_and_scaling(result):
    fig = multilora_figure(result)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2  # left and right
    # module mi has off-diagonal φ = 0.05 (mi + 1), mi = 0..5: mean 0.175; diagonal 1
    for im in images:
        np.testing.assert_allclose(np.asarray(im.get_array()), [[1, 0.175], [0.175, 1]], rtol=1e-12)
        assert im.get_clim() == (0.0, 1.0)
    layer_ax = next(ax for ax in fig.axes if "per layer" in ax.get_title())
    assert [ln.get_label() for ln in layer_ax.lines] == ["left (output)", "right (input)"]
    for line in layer_ax.lines:  # layer l holds modules 2l and 2l + 1
        np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
        np.testing.assert_allclose(line.get_ydata(), [0.075, 0.175, 0.275], rtol=1e-12)
    scale_ax = next(ax for ax in fig.axes if "scaling" in ax.get_title())
    assert [ln.get_label() for ln in scale_ax.lines] == ["module 1", "module 2"]
    np.testing.assert_allclose(scale_ax.lines[0].get_ydata(), 1.0)
    np.testing.assert_allclose(scale_ax.lines[1].get_ydata(), 0.5 + np.arange(6))


def test_missing_entries_and_missing_scaling(result):
    rows = [r for r in result["modules"] if r["multilora"]]
    rows[0]["multilora"]["phi_left"] = [[None, None], [None, 1.0]]  # module 1 contributed 0
    for r in rows:
        r["multilora"]["scaling_norms"] = []
    fig = multilora_figure(result)
    left = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert left[0, 1] == pytest.approx((0.10 + 0.15 + 0.20 + 0.25 + 0.30) / 5)
    scale_ax = next(ax for ax in fig.axes if "scaling" in ax.get_title())
    assert not scale_ax.lines and "no scaling" in scale_ax.texts[0].get_text()
