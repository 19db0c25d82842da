"""What every checkpoint reader provides, and the settings they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from spectra.engine.device import check_compute_dtype
from spectra.errors import OptionError
from spectra.io import open_tensors
from spectra.io.source import TensorSource
from spectra.update import Kind, ModuleUpdate

MAX_LISTED = 5  # modules named one per line in the notes before a count


@dataclass(frozen=True)
class LoadOptions:
    """Settings for turning files into ΔW.

    Attributes:
        dtype: Compute dtype; each stored operand is widened to it before any arithmetic.
            float32 (default) or float64.
        kind: Force the checkpoint kind instead of detecting it from keys/config.
        lora_alpha: α for LoRA files that do not store it (loralib / plain state dicts).
        lora_scale: The full scaling s (instead of α/r) for such files.
        skip_mismatched: Leave out the modules that do not match the base (shape differs, or
            no base weight for an adapted module) and record each in
            :attr:`LoadReport.skipped` with its reason, instead of refusing the checkpoint.
    """

    dtype: torch.dtype = torch.float32
    kind: Kind | None = None
    lora_alpha: float | None = None
    lora_scale: float | None = None
    skip_mismatched: bool = False

    def __post_init__(self) -> None:
        check_compute_dtype(self.dtype)
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
        skipped: Modules or keys left out, each with why (``skip_mismatched``, a zero-sized
            dimension, an integer dtype); each also has a line in ``notes`` (:meth:`skip`).
    """

    skipped_1d: list[str] = field(default_factory=list)
    only_in_base: list[str] = field(default_factory=list)
    only_in_tuned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def skip(self, skipped: Mapping[str, str], *, why: str) -> None:
        """Record modules left out: each in :attr:`skipped`; in :attr:`notes` one line per
        module (the first :data:`MAX_LISTED`, then a count), ``why`` saying what left them
        out."""
        self.skipped.update(skipped)
        items = list(skipped.items())
        for name, reason in items[:MAX_LISTED]:
            self.notes.append(f"skipped {name!r} ({why}): {reason}")
        if len(items) > MAX_LISTED:
            self.notes.append(f"skipped {len(items) - MAX_LISTED} more modules ({why})")


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


class FileReader:
    """The start every reader of one tensor file shares (kohya, MultiLoRA): open the file, keep
    the base and the options, start an empty report, then list the modules
    (:meth:`_list_modules`, which each subclass defines).

    Args:
        path: A ``.safetensors`` or torch (``.pt``/``.pth``/``.bin``) file.
        base: The base model's tensors, or None.
        options: The load options (``dtype`` is the compute dtype).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        base: TensorSource | None = None,
        options: LoadOptions = LoadOptions(),
    ):
        self.path = Path(path)
        self._source = open_tensors(self.path)
        self._base = base
        self._options = options
        self.report = LoadReport()
        self._list_modules(base, options)

    def _list_modules(self, base: TensorSource | None, options: LoadOptions) -> None:
        """Read the file's key names, shapes and config; set ``kind``, ``config`` and the
        module table."""
        raise NotImplementedError


class ReaderFactory(Protocol):
    def __call__(
        self, path: Path, *, base: TensorSource | None, options: LoadOptions
    ) -> CheckpointReader: ...
