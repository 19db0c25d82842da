"""Open any supported tensor container as a :class:`~spectra.io.source.TensorSource`.

What :func:`open_tensors` accepts:

============================  ================================================================
path                          read as
============================  ================================================================
``*.safetensors``             :class:`~spectra.io.safetensors_file.SafetensorsFile`
``*.pt .pth .bin .ckpt``      :class:`~spectra.io.torch_file.TorchFile` (``weights_only=True``)
``*.index.json``              :class:`~spectra.io.sharded.ShardedCheckpoint`
a directory                   the first present of :data:`DIRECTORY_FILES` (an HF model
                              directory: ``config.json`` + weights; safetensors preferred)
============================  ================================================================

Every source has a ``description`` attribute: one line saying which file was read and how
(which directory entry was chosen, what was unwrapped), for the user's report.

:func:`save_tensors` writes the two single-file containers (safetensors, torch) with a string
metadata map that :func:`open_tensors` reads back as ``source.metadata``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from spectra.errors import FileFormatError
from spectra.io.atomic import atomic_path
from spectra.io.safetensors_file import SafetensorsFile
from spectra.io.sharded import ShardedCheckpoint
from spectra.io.source import TensorSource
from spectra.io.torch_file import TorchFile

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".index.json"

# Looked for in a directory, in this order: safetensors before torch pickles (no code
# execution, no unpickling), a single file before an index (as transformers does).
DIRECTORY_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def open_tensors(path: str | Path) -> TensorSource:
    """Open a checkpoint file, sharded index or model directory for key-addressed reading.

    Nothing but headers (safetensors), the weight map (sharded) or the memory-mapped pickle
    structure (torch) is read here; tensor data is read by ``get``.

    Args:
        path: A ``.safetensors`` / ``.pt .pth .bin .ckpt`` file, a ``*.index.json`` file, or a
            directory holding one of :data:`DIRECTORY_FILES`.

    Returns:
        A TensorSource with ``keys()`` sorted and ``get`` returning stored dtypes on CPU.

    Raises:
        FileFormatError: The path is missing, empty, unreadable, of an unknown kind, truncated
            or corrupt; a shard is missing; a directory holds nothing recognisable.
        UnsafeFileError: A torch pickle needs code execution to load.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError("no such file or directory; check the path", path=path)
    if path.is_dir():
        chosen, why = _choose_in_directory(path)
        source = _open_file(chosen)
        source.description = f"{why}: {source.description}"  # type: ignore[attr-defined]
        return source
    return _open_file(path)


def _open_file(path: Path) -> TensorSource:
    """One file, by its name: safetensors, torch pickle, or a sharded index."""
    name = path.name.lower()
    if name.endswith(INDEX_SUFFIX):
        return ShardedCheckpoint(path, open_file=_open_file)
    if name.endswith(SAFETENSORS_SUFFIX):
        return SafetensorsFile(path)
    if name.endswith(TORCH_SUFFIXES):
        return TorchFile(path)
    raise FileFormatError(
        f"unknown file type {path.suffix or '(no extension)'!r}; spectra reads "
        f"{SAFETENSORS_SUFFIX}, {' '.join(TORCH_SUFFIXES)}, *{INDEX_SUFFIX} (sharded) and "
        "model directories; rename the file if it is one of these",
        path=path,
    )


def _choose_in_directory(directory: Path) -> tuple[Path, str]:
    """The weights file to read in a model directory, and a note saying why it was chosen."""
    present = [n for n in DIRECTORY_FILES if (directory / n).is_file()]
    if not present:
        raise FileFormatError(
            f"no weights found in this directory; looked for {', '.join(DIRECTORY_FILES)}; "
            "pass the weights file itself if it is named differently",
            path=directory,
        )
    kind = "HF model directory" if (directory / "config.json").is_file() else "directory"
    why = f"{kind} {directory}, read {present[0]}"
    if len(present) > 1:
        why += f" (preferred over {', '.join(present[1:])})"
    return directory / present[0], why


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write tensors and a string metadata map to one file, atomically (temporary file, then
    rename): ``.safetensors`` keeps the map in its header, ``.pt`` / ``.pth`` / ``.bin`` a
    torch file holding only the tensors and the ``"__metadata__"`` entry (what
    :class:`~spectra.io.torch_file.TorchFile` reads back as ``metadata``).

    Args:
        path: Destination file; its suffix picks the container.
        tensors: Name → tensor (moved to the CPU, made contiguous and detached first).
        metadata: String → string map.

    Returns:
        The path written.

    Raises:
        ValueError: Another suffix.
    """
    path = Path(path)
    if path.suffix not in (SAFETENSORS_SUFFIX, ".pt", ".pth", ".bin"):
        raise ValueError(f"{path}: use a .safetensors, .pt, .pth or .bin file name")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = dict(metadata)
    with atomic_path(path) as tmp:
        if path.suffix == SAFETENSORS_SUFFIX:
            save_file(cpu, str(tmp), metadata=meta)
        else:
            torch.save({**cpu, "__metadata__": meta}, tmp)
    return path
