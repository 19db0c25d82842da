"""Figure 4: φ heatmaps averaged over modules, colour range fixed to [0, 1]."""

from __future__ import annotations

import numpy as np
from matplotlib.image import AxesImage
from result_factory import TOP_K

from spectra.plots import subspace_similarity_figure
from spectra.plots.data import nanmean_padded
from spectra.plots.subspace import mean_phi_grid, method_pairs


def _images(fig) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.get_images()]


def test_one_heatmap_per_pair_and_side(result):
    fig = subspace_similarity_figure(result)
    images = _images(fig)
    assert method_pairs(result) == [("full", "lora"), ("full", "multilora"), ("lora", "multilora")]
    assert len(images) == 3 * 2
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert titles[0].startswith("full vs lora: left") and titles[1].startswith(
        "full vs lora: right"
    )
    for im in images:
        data = np.asarray(im.get_array())
        assert data.shape == (TOP_K, TOP_K)
        assert np.all((data >= -1e-12) & (data <= 1 + 1e-12))
        assert im.get_clim() == (0.0, 1.0)
    colorbar_axes = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbar_axes) == 1 and "φ(i, j)" in colorbar_axes[0].get_ylabel()


def test_identical_subspaces_give_one_and_means_match_the_rows(result):
    fig = subspace_similarity_figure(result)
    images = _images(fig)
    # lora and multilora were given the same bases: φ(i, j) = 1 everywhere
    np.testing.assert_allclose(np.asarray(images[4].get_array()), 1.0, atol=1e-12)
    # full vs lora, left: the plain mean of the six module grids
    grids = [
        np.array(s["phi"])
        for s in result["similarity"]
        if (s["a"], s["b"], s["side"]) == ("full", "lora", "left")
    ]
    assert len(grids) == 6
    np.testing.assert_allclose(
        np.asarray(images[0].get_array()), np.mean(grids, axis=0), rtol=1e-12
    )


def test_grids_of_different_k_average_cell_by_cell():
    a = np.full((2, 2), 0.2)
    b = np.full((3, 3), 0.8)
    mean = nanmean_padded([a, b])
    np.testing.assert_allclose(mean[:2, :2], 0.5)
    np.testing.assert_allclose(mean[2, :], 0.8)
    np.testing.assert_allclose(mean[:, 2], 0.8)


def test_mean_phi_grid_counts_modules(result):
    grid, n = mean_phi_grid(result, "full", "lora", "right")
    assert n == 6 and grid.shape == (TOP_K, TOP_K)
    assert mean_phi_grid(result, "lora", "full", "right")[1] == 0  # pairs are ordered (a, b)


def test_no_pair_gives_none(result):
    result["similarity"] = []
    assert subspace_similarity_figure(result) is None
