"""Saving and loading analysis results (the ``compare --json`` file), byte-deterministically,
and the result object a notebook displays.

The result is defined in :mod:`spectra.result_types`; :func:`load_result` checks a file against
those types (:mod:`spectra.io.result_schema`) before anything reads it.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from spectra.frames import Frames, frames
from spectra.io.atomic import write_text_atomic
from spectra.io.jsonfile import read_json
from spectra.io.result_schema import check_result
from spectra.result_types import Result
from spectra.tables import summary_table, to_html, to_markdown


class AnalysisResult(dict[str, Any]):
    """An analysis result: a plain dict of :class:`~spectra.result_types.Result` shape (its
    JSON is the same, byte for byte) that a notebook displays as its summary table and that
    gives its pandas DataFrames."""

    def frames(self) -> Frames:
        """:func:`spectra.frames.frames` of this result (needs the ``frames`` extra)."""
        return frames(self)

    def _repr_markdown_(self) -> str:
        return self._caption() + "\n\n" + to_markdown(summary_table(self))

    def _repr_html_(self) -> str:
        return f"<p>{escape(self._caption())}</p>" + to_html(summary_table(self))

    def _caption(self) -> str:
        n_modules = len({m["module"] for m in self.get("modules", [])})
        labels = ", ".join(i["label"] for i in self.get("inputs", []))
        return f"spectra result: {n_modules} modules of {labels} (means over changed modules)"


def dumps_result(result: Result | dict[str, Any]) -> str:
    """The canonical JSON text of a result: same input → same bytes (no timestamps; NaN is
    already None, so ``allow_nan=False`` guarantees strict JSON)."""
    return json.dumps(result, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def save_result(result: Result | dict[str, Any], path: str | Path) -> Path:
    """Write a result as JSON atomically (temp file + rename)."""
    return write_text_atomic(path, dumps_result(result))


def load_result(path: str | Path) -> AnalysisResult:
    """Read a result written by :func:`save_result` (``spectra compare --json``,
    ``diagnose --json``, a report's ``results.json``).

    A ``diagnose --json`` file of spectra 0.1 (``{"diagnosis": ..., "result": ...}``) is read
    as the result it wraps.

    Raises:
        FileFormatError: The file is missing, unreadable or not JSON, or a field the plotters,
            report or diagnose read is missing or ill-typed (see
            :mod:`spectra.io.result_schema`); the message names the file and the field.
    """
    data = read_json(
        path, what="the result file", fix="pass a file written by `spectra compare --json`"
    )
    if isinstance(data, dict) and set(data) == {"diagnosis", "result"}:
        data = {**data["result"], "diagnosis": data["diagnosis"]}
    return AnalysisResult(check_result(data, path))
