"""Reading a JSON file that may be hostile: every way it can be broken is a FileFormatError.

``json.loads`` fails in more ways than :class:`json.JSONDecodeError`: nesting deeper than the
interpreter's recursion limit raises :class:`RecursionError`, and an integer literal of more
than 4300 digits raises a plain :class:`ValueError` (Python ≥ 3.11). It also accepts ``NaN`` /
``Infinity``, which are not JSON; files spectra writes never hold them, so by default they are
refused. Every JSON file spectra reads (sharded indexes,
``adapter_config.json``, saved results) goes through :func:`read_json`. Config and provenance
records are written out through :func:`fields_as_json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from spectra.errors import FileFormatError


def fields_as_json(record: Any) -> dict[str, Any]:
    """A dataclass instance's fields, in declaration order, as JSON-able values: a deep copy
    (:func:`dataclasses.asdict`) with each tuple-valued field written as a list.

    Args:
        record: A dataclass instance whose field values are JSON types or tuples of them.
    """
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(record).items()}


def read_json(path: str | Path, *, what: str, fix: str, allow_nan: bool = False) -> Any:
    """The parsed content of a JSON file.

    Args:
        path: The file.
        what: What the file is, for messages (e.g. ``"the adapter config"``).
        fix: What the user should do when it is broken (e.g. ``"save the adapter again"``).
        allow_nan: Accept ``NaN`` / ``Infinity`` as Python's ``json.dumps`` writes them (files
            written by other tools, whose fields the caller validates by name); else refuse.

    Returns:
        The parsed value (any JSON type; callers check the structure they need).

    Raises:
        FileFormatError: Missing, a directory, a pipe or device, unreadable, not UTF-8, not JSON,
            nested too deeply, holding a number Python refuses to convert, or (unless
            ``allow_nan``) NaN / Infinity; the message names the file.
    """
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        # a pipe or a device: reading it could block forever or never end
        raise FileFormatError(f"not a regular file, so not {what}; pass the file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise FileFormatError(f"no such file: {what} is missing; check the path", path=path) from e
    except IsADirectoryError as e:
        raise FileFormatError(f"is a directory, not {what}; pass the file", path=path) from e
    except OSError as e:
        raise FileFormatError(
            f"cannot read {what} ({e.strerror or e}); check that the file is readable", path=path
        ) from e
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{what} is not UTF-8 text ({e.reason}); {fix}", path=path) from e
    try:
        return json.loads(text, parse_constant=None if allow_nan else _refuse_constant)
    except json.JSONDecodeError as e:
        raise FileFormatError(
            f"{what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); {fix}",
            path=path,
        ) from e
    except RecursionError as e:
        raise FileFormatError(f"{what} nests too deeply to be parsed; {fix}", path=path) from e
    except ValueError as e:  # e.g. an integer literal of more than 4300 digits
        raise FileFormatError(f"{what} is not usable JSON ({e}); {fix}", path=path) from e


def _refuse_constant(name: str) -> NoReturn:
    # json.loads calls this for NaN, Infinity and -Infinity, which strict JSON does not have.
    raise ValueError(f"{name} is not a JSON value")
