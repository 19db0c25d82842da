"""Writing figures to bytes and files, byte-deterministically.

Same figure → same bytes: SVG ids are salted with a fixed string (``svg.hashsalt``) and the
date metadata is dropped; PNG carries no timestamp. Files are written atomically
(:mod:`spectra.io.atomic`), so an interrupted run leaves no half-written image.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from spectra.errors import OptionError
from spectra.io.atomic import atomic_path
from spectra.plots.style import DPI

FORMATS = ("png", "svg", "pdf")
_HASHSALT = "spectra"
# Dates make output differ run to run; drop them ("Date" for SVG, "CreationDate" for PDF).
_METADATA: dict[str, dict[str, None]] = {
    "svg": {"Date": None},
    "pdf": {"CreationDate": None},
    "png": {},
}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise OptionError(f"unknown figure format {fmt!r}; choose from {', '.join(FORMATS)}")


def _save(fig: Figure, target: io.BytesIO | Path, fmt: str) -> None:
    # Texts built from file names were created with parse_math off (all_figures); tick labels
    # made while drawing keep mathtext, which the log axes' 10^k labels need.
    for ax in fig.axes:  # ticks made while building took parse_math off with them
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick.label1.set_parse_math(True)
                tick.label2.set_parse_math(True)
    with matplotlib.rc_context({"svg.hashsalt": _HASHSALT}):
        fig.savefig(target, format=fmt, dpi=DPI, metadata=_METADATA[fmt])


def render_figure(fig: Figure, fmt: str = "png") -> bytes:
    """The figure encoded as ``fmt`` (``png`` at 150 dpi, ``svg`` or ``pdf``), deterministically.

    Raises:
        OptionError: Unknown format.
    """
    _check_format(fmt)
    buf = io.BytesIO()
    _save(fig, buf, fmt)
    return buf.getvalue()


def save_figures(
    figures: Mapping[str, Figure], out_dir: str | Path, formats: Iterable[str] = ("png", "svg")
) -> list[Path]:
    """Write every figure as ``out_dir/<name>.<fmt>`` atomically.

    Args:
        figures: Name → figure (e.g. from :func:`spectra.plots.all_figures`).
        out_dir: Directory, created if missing.
        formats: Any of ``png``, ``svg``, ``pdf``.

    Returns:
        The paths written, in figure then format order.

    Raises:
        OptionError: Unknown format.
    """
    formats = tuple(formats)
    for fmt in formats:
        _check_format(fmt)
    written = []
    for name, fig in figures.items():
        for fmt in formats:
            path = Path(out_dir) / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                _save(fig, tmp, fmt)
            written.append(path)
    return written
