"""What every checkpoint reader provides, and the settings they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from spectra.errors import OptionError
from spectra.io.source import TensorSource
from spectra.update import Kind, ModuleUpdate


@dataclass(frozen=True)
class LoadOptions:
    """Settings for turning files into ΔW.

    Attributes:
        dtype: Compute dtype; each stored operand is widened to it before any arithmetic.
            float32 (default) or float64.
        kind: Force the checkpoint kind instead of detecting it from keys/config.
        lora_alpha: α for LoRA files that do not store it (loralib / plain state dicts).
        lora_scale: The full scaling s (instead of α/r) for such files.
    """

    dtype: torch.dtype = torch.float32
    kind: Kind | None = None
    lora_alpha: float | None = None
    lora_scale: float | None = None

    def __post_init__(self) -> None:
        if self.dtype not in (torch.float32, torch.float64):
            raise OptionError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.lora_alpha is not None and self.lora_scale is not None:
            raise OptionError("pass --lora-alpha or --lora-scale, not both")


@dataclass(frozen=True)
class ModuleInfo:
    """One adapted module as a file describes it (for ``spectra inspect``), read without
    computing ΔW.

    Attributes:
        module: Module path (as in the base checkpoint when a base was given).
        shape: (out, in) of ΔW.
        rank: Inner size R of a factored update, None for dense updates.
        scaling: Human-readable scaling rule with numbers, e.g. ``"alpha/r = 16/8 = 2"``.
        detail: Kind-specific facts (n and r per module for MultiLoRA, stored dtype, ...).
    """

    module: str
    shape: tuple[int, int]
    rank: int | None
    scaling: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """What a reader skipped or noticed while listing modules; shown to the user.

    Attributes:
        skipped_1d: Keys of 1-D tensors (biases, norms) skipped: spectra analyses matrices.
        only_in_base: Keys present in the base but not in the tuned checkpoint.
        only_in_tuned: Keys present in the tuned checkpoint but not in the base.
        notes: Anything else the user should know (one line each).
    """

    skipped_1d: list[str] = field(default_factory=list)
    only_in_base: list[str] = field(default_factory=list)
    only_in_tuned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class CheckpointReader(Protocol):
    """A checkpoint of one kind, opened: lists its modules and yields ΔW one module at a time.

    Attributes:
        path: File or directory given by the user.
        kind: Detected (or forced) kind.
        config: The adapter/config facts read from the files (α, r, targets, ...), JSON-able.
        report: What was skipped or noticed.
    """

    path: Path
    kind: Kind
    config: dict[str, Any]
    report: LoadReport

    def modules(self) -> list[ModuleInfo]:
        """Every adapted module, in a stable (sorted) order."""
        ...

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module listed by :meth:`modules`, in ``LoadOptions.dtype``; factored
        updates stay factored."""
        ...


class ReaderFactory(Protocol):
    def __call__(
        self, path: Path, *, base: TensorSource | None, options: LoadOptions
    ) -> CheckpointReader: ...
