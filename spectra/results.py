"""Saving and loading analysis results (the ``compare --json`` file), byte-deterministically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spectra.io.atomic import write_text_atomic
from spectra.io.jsonfile import read_json
from spectra.io.result_schema import check_result

REQUIRED_KEYS = ("inputs", "modules", "similarity", "summary", "settings")


def dumps_result(result: dict[str, Any]) -> str:
    """The canonical JSON text of a result: same input → same bytes (no timestamps; NaN is
    already None, so ``allow_nan=False`` guarantees strict JSON)."""
    return json.dumps(result, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def save_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write a result as JSON atomically (temp file + rename)."""
    return write_text_atomic(path, dumps_result(result))


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a result written by :func:`save_result` (``spectra compare --json``).

    Raises:
        FileFormatError: The file is missing, unreadable or not JSON, or a field the plotters,
            report or diagnose read is missing or ill-typed (see
            :mod:`spectra.io.result_schema`); the message names the file and the field.
    """
    return check_result(
        read_json(
            path, what="the result file", fix="pass a file written by `spectra compare --json`"
        ),
        path,
    )
