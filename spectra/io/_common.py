"""Pieces every tensor container shares: the key list, the missing-key error and the file
pre-checks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeGuard

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


class SortedKeys:
    """``keys()``, ``in`` and the missing-key check of a container whose tensor names are known
    once it is opened (safetensors header, torch state dict, sharded weight map).

    A subclass sets ``path`` and calls :meth:`_set_keys` in its constructor.
    """

    path: Path
    _keys: list[str]
    _key_set: frozenset[str]

    def _set_keys(self, names: Iterable[str]) -> None:
        self._keys = sorted(names)
        self._key_set = frozenset(self._keys)

    def keys(self) -> list[str]:
        """Tensor names, sorted."""
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def _require(self, key: str) -> None:
        """Raise :class:`MissingTensorError` (a few keys listed) when ``key`` is not stored."""
        if key not in self._key_set:
            raise missing_key(key, self.path, self._keys)


def is_str_map(obj: object) -> TypeGuard[dict[str, str]]:
    """True when ``obj`` is a dict of strings to strings (metadata, a weight map)."""
    return isinstance(obj, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
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
