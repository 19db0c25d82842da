"""The interface every tensor container implements (safetensors, sharded, torch, HF dirs)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class TensorSource(Protocol):
    """Read-only, key-addressed access to the tensors of one checkpoint, one tensor at a time.

    Implementations never load more than the tensor asked for (safetensors ``safe_open``,
    torch ``mmap=True``), never modify the file, and raise :class:`spectra.errors.SpectraError`
    subclasses naming the file and key for anything wrong with the input.

    Attributes:
        path: The file or directory opened.
        metadata: String-to-string metadata stored with the tensors (safetensors
            ``__metadata__``; the ``"__metadata__"`` entry of a torch file; empty otherwise).
    """

    path: Path
    metadata: dict[str, str]

    def keys(self) -> list[str]:
        """Tensor names, normalized (nesting under state_dict/model/module and a leading
        ``module.`` DDP prefix removed), sorted."""
        ...

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of one tensor without reading its data."""
        ...

    def dtype(self, key: str) -> torch.dtype:
        """Stored dtype of one tensor without reading its data."""
        ...

    def get(self, key: str) -> torch.Tensor:
        """One tensor, in its stored dtype, on CPU. Raises FileFormatError if unreadable."""
        ...

    def __contains__(self, key: str) -> bool: ...
