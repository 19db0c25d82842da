"""From checkpoint files to ΔW: detect the kind of a checkpoint and open it with its reader.

======================  =============================================  ===========================
kind                    reader                                         files
======================  =============================================  ===========================
``full``                :class:`~spectra.loaders.full.FullReader`       full checkpoint + BASE
``lora`` / ``dora``     :class:`~spectra.loaders.peft.PeftLoraReader`,  PEFT adapter dir; LoRA state
                        :class:`~spectra.loaders.plain_lora.PlainLoraReader`  dict (loralib, PEFT keys)
``multilora``           :class:`~spectra.loaders.multilora.MultiLoRAReader`  spectra MultiLoRA file
``kohya`` / ``loha`` /  :class:`~spectra.loaders.kohya.KohyaReader`     kohya / LyCORIS file
``lokr``
======================  =============================================  ===========================

Adding a format takes one reader file and one entry in :data:`READERS` (plus a detection rule
in :mod:`spectra.loaders.detect`).
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
from spectra.loaders.detect import detect_kind, find_peft_files
from spectra.loaders.full import FullReader
from spectra.loaders.kohya import KohyaReader
from spectra.loaders.lora_factors import LoraFileReader
from spectra.loaders.multilora import MultiLoRAReader
from spectra.loaders.peft import PeftLoraReader
from spectra.loaders.plain_lora import PlainLoraReader, write_lora_state_dict
from spectra.update import Kind


def open_lora(
    path: Path, *, base: TensorSource | None, options: LoadOptions
) -> PeftLoraReader | PlainLoraReader:
    """A LoRA / DoRA adapter: PEFT's layout when an ``adapter_config.json`` is there or beside
    the file, else a plain state dict (:mod:`spectra.loaders.plain_lora`)."""
    if find_peft_files(Path(path)) is not None:
        return PeftLoraReader(path, base=base, options=options)
    return PlainLoraReader(path, base=base, options=options)


# kind → the class (or function) that opens a checkpoint of that kind.
READERS: dict[Kind, ReaderFactory] = {
    "full": FullReader,
    "lora": open_lora,
    "dora": open_lora,
    "multilora": MultiLoRAReader,
    "kohya": KohyaReader,
    "loha": KohyaReader,
    "lokr": KohyaReader,
}


def open_checkpoint(
    path: str | Path, *, base: TensorSource | None = None, options: LoadOptions = LoadOptions()
) -> CheckpointReader:
    """Open a checkpoint of any supported kind for reading ΔW module by module.

    Args:
        path: A checkpoint file or directory (PEFT adapter dir or file, LoRA state dict,
            kohya / LyCORIS file, MultiLoRA file, full checkpoint file / sharded index / model
            directory).
        base: The base model's tensors (:func:`spectra.io.open_tensors`); needed for full
            checkpoints, optional for adapters (then module names are mapped to base names and
            shapes checked).
        options: Compute dtype, ``kind`` to skip detection, ``lora_alpha`` / ``lora_scale``
            for LoRA files that store no α.

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
    "KohyaReader",
    "LoadOptions",
    "LoadReport",
    "LoraFileReader",
    "ModuleInfo",
    "PeftLoraReader",
    "PlainLoraReader",
    "detect_kind",
    "open_checkpoint",
    "open_lora",
    "open_tensors",
    "write_lora_state_dict",
]
