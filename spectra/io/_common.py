"""Pieces every tensor container shares: the missing-key error and the file pre-checks."""

from __future__ import annotations

import os
from pathlib import Path

from spectra.errors import FileFormatError, SpectraError

_MAX_LISTED = 5  # keys shown in one error message


class MissingTensorError(SpectraError, KeyError):
    """A key asked for is not in the checkpoint. Also a :class:`KeyError`, so ``dict``-style
    callers (``except KeyError``) keep working."""

    def __str__(self) -> str:
        # KeyError.__str__ would quote the whole message; show it as written.
        return Exception.__str__(self)


def missing_key(key: str, path: str | Path, keys: list[str]) -> MissingTensorError:
    """The error for ``key`` not being among ``keys`` of ``path`` (a few keys are listed)."""
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return MissingTensorError(
        f"no tensor named {key!r} in this checkpoint ({len(keys)} tensors: {shown}{more}); "
        "check the key, or that this is the file you meant",
        path=path,
        key=key,
    )


def check_file(path: Path) -> None:
    """Refuse a path that is not a non-empty readable regular file.

    Raises:
        FileFormatError: The path is missing, not a file, empty or unreadable.
    """
    if not path.exists():
        raise FileFormatError("no such file; check the path", path=path)
    if not path.is_file():
        raise FileFormatError("not a regular file; pass a checkpoint file", path=path)
    if path.stat().st_size == 0:
        raise FileFormatError(
            "the file is empty (0 bytes): it was not written completely; save it again",
            path=path,
        )
    if not os.access(path, os.R_OK):
        raise FileFormatError("the file is not readable; check its permissions", path=path)
