"""Atomic output: write to a temporary file beside the destination, then rename over it.

A failure or an interrupt leaves either the old file or no file, never a partial one, and no
temporary file behind. Writing can fail for reasons outside spectra (a full disk, a read-only
directory, ``--out`` naming an existing file, ``--json`` naming a directory): such an
:class:`OSError` becomes a :class:`~spectra.errors.SpectraError` naming the destination.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from spectra.errors import OptionError, SpectraError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success rename it to ``path``.

    The parent directory is created if missing. On any exception (KeyboardInterrupt too) the
    temporary file is removed and the exception re-raised; an :class:`OSError` is re-raised
    as a :class:`~spectra.errors.SpectraError` that names ``path``.

    Raises:
        SpectraError: The directory cannot be created, or the file cannot be written or
            renamed into place (e.g. ``path`` is a directory, the disk is full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _cannot_write(path, e) from e
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600; give the file the mode a plain open() would
            tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise _cannot_write(path, e) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: Path, e: OSError) -> SpectraError:
    if path.is_dir():
        why = "it is a directory; pass a file name"
    elif path.parent.exists() and not path.parent.is_dir():
        why = f"{path.parent} is a file, not a directory; pass another output path"
    else:
        why = f"{e.strerror or e}; check free space and write permission in {path.parent}"
    return SpectraError(f"cannot write the output: {why}", path=path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it becomes ``path``.

    An existing ``path`` is moved aside, replaced, then removed, so that a failure or an
    interrupt leaves the old directory (or none), never a half-written one, and no temporary
    directory behind.

    Raises:
        SpectraError: The directory cannot be created or renamed into place (``path`` is a
            file, the disk is full, no write permission).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    except OSError as e:
        raise _cannot_write(path, e) from e
    try:
        yield tmp
        if path.is_file():
            raise IsADirectoryError(f"{path} is a file")
        if path.exists():  # a directory cannot be renamed over a non-empty one
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise SpectraError(
                f"cannot write the output directory: {e.strerror or e}; pass another --out",
                path=path,
            ) from e
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_not_an_input(output: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output path that is one of the inputs or lies inside an input directory, so
    that a mistyped ``--json`` / ``--out`` can never overwrite or add to a checkpoint.

    Args:
        output: A file or directory about to be written.
        inputs: The paths the command reads (None entries are skipped).

    Raises:
        OptionError: ``output`` is an input, or inside an input directory.
    """
    out = Path(output).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source or source in out.parents:
            raise OptionError(
                f"the output {output} would {'overwrite' if out == source else 'write into'} "
                f"the input {given}; spectra never modifies its inputs: write the output elsewhere"
            )
