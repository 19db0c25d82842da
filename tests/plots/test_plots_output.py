"""all_figures, colours across figures, and deterministic PNG/SVG output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib.colors as mcolors
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from spectra.errors import OptionError
from spectra.plots import FIGURES, all_figures, render_figure, save_figures
from spectra.plots.style import OKABE_ITO, method_colors

ALL = list(FIGURES)


def test_all_figures_omits_what_has_no_data(result, plain_result):
    assert list(all_figures(result)) == ALL
    assert list(all_figures(plain_result)) == [
        "fig1_histogram",
        "fig2_normalized_spectrum",
        "fig3_cumulative_energy",
        "fig4_subspace_similarity",
        "fig5_layer_dominance",
    ]


def test_figures_are_built_without_pyplot(result):
    for fig in all_figures(result).values():
        assert isinstance(fig, Figure)
        assert fig.canvas.manager is None  # not registered with pyplot: nothing to show/leak


def test_same_color_per_method_in_every_figure(result):
    colors = method_colors(result)
    assert list(colors) == ["full", "lora", "multilora"]
    assert list(colors.values()) == list(OKABE_ITO[:3])
    seen = 0
    for name, fig in all_figures(result).items():
        for ax in fig.axes:
            for artist in [*ax.lines, *ax.patches]:
                label = artist.get_label().split(" ")[0].rstrip(":")
                if label in colors:
                    line = isinstance(artist, Line2D)
                    color = artist.get_color() if line else artist.get_edgecolor()
                    assert mcolors.to_hex(color) == colors[label].lower(), (name, label)
                    seen += 1
    assert seen > 20


def test_colors_follow_input_order_not_names(result):
    result["inputs"].reverse()
    assert method_colors(result) == {
        "multilora": OKABE_ITO[0],
        "lora": OKABE_ITO[1],
        "full": OKABE_ITO[2],
    }


def test_save_png_and_svg_atomically_and_deterministically(result, tmp_path):
    fig = all_figures(result)["fig1_histogram"]
    paths = save_figures({"fig1_histogram": fig}, tmp_path / "out")
    assert [p.name for p in paths] == ["fig1_histogram.png", "fig1_histogram.svg"]
    png, svg = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert b"<dc:date>" not in svg  # no timestamp
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp left
    # the same figure renders to the same bytes (SVG ids salted with a fixed string)
    assert render_figure(fig, "svg") == svg
    assert render_figure(fig, "png") == png


def test_unknown_format_is_refused(result, tmp_path):
    with pytest.raises(OptionError, match="jpeg"):
        save_figures(all_figures(result), tmp_path, formats=("jpeg",))
    assert not list(tmp_path.iterdir())


def test_log_axis_tick_labels_render_as_powers_of_ten(result):
    # Names from files are plain text, but the log axes' "10^k" tick labels are mathtext:
    # drawn raw they read "$\mathdefault{10^{4}}$" and are several times wider.
    fig = all_figures(result)["fig1_histogram"]
    render_figure(fig, "png")  # draws the ticks under the rc settings render uses
    ax = fig.axes[0]
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("mathdefault" in t.get_text() for t in labels)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    widths = [t.get_window_extent(renderer).width for t in labels]
    assert max(widths) < 60, widths
