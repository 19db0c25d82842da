"""From checkpoint files to ΔW: detect the kind of a checkpoint and open it with its reader.

Adding a format (DoRA, kohya, LyCORIS, loralib) takes one reader file and one entry in
:data:`READERS` (plus a detection rule in :mod:`spectra.loaders.detect`).
"""

from __future__ import annotations

from pathlib import Path

from spectra.errors import UnsupportedFormatError
from spectra.io import open_tensors
from spectra.io.source import TensorSource
from spectra.loaders.base import (
    CheckpointReader,
    LoadOptions,
    LoadReport,
    ModuleInfo,
    ReaderFactory,
)
from spectra.loaders.detect import detect_kind
from spectra.loaders.full import FullReader
from spectra.loaders.multilora import MultiLoRAReader
from spectra.loaders.peft import PeftLoraReader
from spectra.update import Kind

# kind → the class (or function) that opens a checkpoint of that kind.
READERS: dict[Kind, ReaderFactory] = {
    "full": FullReader,
    "lora": PeftLoraReader,
    "multilora": MultiLoRAReader,
}


def open_checkpoint(
    path: str | Path, *, base: TensorSource | None = None, options: LoadOptions = LoadOptions()
) -> CheckpointReader:
    """Open a checkpoint of any supported kind for reading ΔW module by module.

    Args:
        path: A checkpoint file or directory (PEFT adapter dir or file, MultiLoRA file, full
            checkpoint file / sharded index / model directory).
        base: The base model's tensors (:func:`spectra.io.open_tensors`); needed for full
            checkpoints, optional for adapters (then module names are mapped to base names and
            shapes checked).
        options: Compute dtype, and ``kind`` to skip detection.

    Returns:
        The reader for the detected (or forced) kind.

    Raises:
        UnsupportedFormatError: No reader exists for the kind.
        SpectraError: Whatever detection or the reader refuses (see :func:`detect_kind`).
    """
    path = Path(path)
    kind = options.kind or detect_kind(path)
    factory = READERS.get(kind)
    if factory is None:
        raise UnsupportedFormatError(
            f"checkpoints of kind {kind!r} are not read yet; spectra reads: {', '.join(sorted(READERS))}",
            path=path,
        )
    return factory(path, base=base, options=options)


__all__ = [
    "READERS",
    "CheckpointReader",
    "LoadOptions",
    "LoadReport",
    "ModuleInfo",
    "detect_kind",
    "open_checkpoint",
    "open_tensors",
]
