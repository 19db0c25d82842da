"""Exceptions spectra raises for bad input, and the exit codes the CLI maps them to.

Every user-facing failure is a :class:`SpectraError` whose message names the file and the
key, field or shape involved and says what to do. Anything else that escapes is a bug in
spectra (exit code :data:`EXIT_INTERNAL`).

Exit codes (documented in the README):

====  ==========================================================================
0     success
1     bad input: a file, key, shape or option spectra cannot use (SpectraError)
2     command-line usage error (unknown option, missing argument; from Typer/Click)
3     ``spectra diagnose --fail-on``: the verdict named was reached
4     internal error: a bug in spectra (please report it; rerun with ``--debug``)
====  ==========================================================================
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_VERDICT = 3
EXIT_INTERNAL = 4


class SpectraError(Exception):
    """Base class for every error caused by the input rather than by spectra itself.

    Args:
        message: What is wrong and what to do about it.
        path: The file or directory the problem is in, when there is one.
        key: The tensor key, config field or module the problem is in, when there is one.
    """

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: str | Path | None = None, key: str | None = None):
        self.path = None if path is None else str(path)
        self.key = key
        self.detail = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if key is not None:
            where.append(f"[{key}]")
        prefix = (" ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class FileFormatError(SpectraError):
    """A file or directory is missing, unreadable, truncated, or not a format spectra reads."""


class UnsafeFileError(SpectraError):
    """A pickle-based file needs code execution to load; spectra refuses it (weights_only)."""


class CheckpointMismatchError(SpectraError):
    """Two checkpoints that must align (base and tuned) do not: keys or shapes differ."""


class AdapterConfigError(SpectraError):
    """An adapter's config or tensors are invalid or inconsistent (rank, alpha, missing halves)."""


class AmbiguousInputError(SpectraError):
    """The files alone do not determine the answer; the message names the option to pass."""


class UnsupportedFormatError(SpectraError):
    """A recognised format whose ΔW cannot be computed from the files (e.g. PiSSA init)."""


class OptionError(SpectraError):
    """An option value is invalid (e.g. a bad regex, an unknown dtype, CUDA not present)."""
