"""Saving and loading analysis results (the ``compare --json`` file), byte-deterministically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spectra.errors import FileFormatError
from spectra.io.atomic import write_text_atomic

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
        FileFormatError: The file is missing, not JSON, or lacks a required key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise FileFormatError("file not found", path=path) from e
    except (OSError, UnicodeDecodeError) as e:
        raise FileFormatError(f"cannot read: {e}", path=path) from e
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileFormatError(
            f"not valid JSON ({e.msg} at line {e.lineno}); pass a file written by "
            "`spectra compare --json`",
            path=path,
        ) from e
    if not isinstance(result, dict):
        raise FileFormatError("not a spectra result (top level is not an object)", path=path)
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise FileFormatError(
            f"not a spectra result: missing {', '.join(missing)}; pass a file written by "
            "`spectra compare --json`",
            path=path,
        )
    return result
