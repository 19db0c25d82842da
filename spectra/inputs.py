"""What to analyse: the base, the checkpoints, their labels and kinds, and how to read them.

:class:`AnalysisInputs` is built once (by the command line, or by a library caller through
:meth:`AnalysisInputs.of`) and handed whole to :func:`spectra.analysis.analyze_inputs`; how to
analyse them is the other object, :class:`spectra.analysis.AnalysisOptions`. It is frozen and
picklable: a worker process reopens exactly these files with exactly these settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from spectra.errors import CheckpointMismatchError, OptionError
from spectra.io.source import TensorSource
from spectra.loaders import READERS, CheckpointReader, LoadOptions, open_checkpoint
from spectra.update import Kind

# the names of the file itself that say nothing: the folder names the checkpoint instead
_GENERIC_STEMS = ("adapter_model", "adapter_config", "model", "pytorch_model")


def known_kinds() -> tuple[str, ...]:
    """The checkpoint kinds spectra reads, from the reader registry
    (:data:`spectra.loaders.READERS`), in its order."""
    return tuple(READERS)


def default_labels(paths: Sequence[str | Path]) -> list[str]:
    """Labels from file names (``lora/`` → ``lora``, ``full.safetensors`` → ``full``), made
    unique by appending ``-2``, ``-3``, ..."""
    labels: list[str] = []
    for p in paths:
        p = Path(p)
        stem = p.name if p.is_dir() else p.stem
        if stem in _GENERIC_STEMS:
            stem = p.parent.name or stem
        label, i = stem, 2
        while label in labels:
            label, i = f"{stem}-{i}", i + 1
        labels.append(label)
    return labels


@dataclass(frozen=True)
class AnalysisInputs:
    """The files of one analysis and how to read them.

    Attributes:
        base: The base checkpoint, or None (adapters alone; full fine-tunes, DoRA and
            ``modules_to_save`` need it).
        checkpoints: The checkpoints compared, in the user's order (at least one).
        labels: One unique name per checkpoint.
        kinds: Per checkpoint, a kind forced instead of detected (None: detect from the files).
        load: How files become ΔW: α or the scaling for LoRA files that store none, what to do
            with modules that do not match the base, ... (:class:`~spectra.loaders.LoadOptions`;
            its ``kind`` is per checkpoint, above, and its ``dtype`` is the analysis's).
    """

    base: Path | None
    checkpoints: tuple[Path, ...]
    labels: tuple[str, ...]
    kinds: tuple[Kind | None, ...]
    load: LoadOptions = field(default_factory=LoadOptions)

    def __post_init__(self) -> None:
        n = len(self.checkpoints)
        if n == 0:
            raise OptionError("nothing to analyse: give at least one checkpoint")
        if len(self.labels) != n:
            raise OptionError(
                f"got {len(self.labels)} --label for {n} checkpoints: give one per CKPT, in order"
            )
        if len(set(self.labels)) != n:
            raise OptionError(f"labels must be unique, got {list(self.labels)}")
        if len(self.kinds) != n:
            raise OptionError(
                f"got {len(self.kinds)} --kind for {n} checkpoints: give one per CKPT, in order "
                "('auto' detects)"
            )
        bad = [k for k in self.kinds if k is not None and k not in READERS]
        if bad:
            raise OptionError(f"--kind {bad[0]!r} is not one of auto, {', '.join(known_kinds())}")
        if self.load.kind is not None:
            raise OptionError("kinds are given per checkpoint (kinds=...), not in load.kind")

    @classmethod
    def of(
        cls,
        base: str | Path | None,
        checkpoints: Sequence[str | Path],
        *,
        labels: Sequence[str] | None = None,
        kinds: Sequence[Kind | None] | None = None,
        load: LoadOptions | None = None,
    ) -> AnalysisInputs:
        """The inputs with defaults filled in: labels from the file names, every kind detected.

        Raises:
            OptionError: A count of labels or kinds differs from the number of checkpoints, a
                label repeats, or a kind is not one spectra reads.
        """
        paths = tuple(Path(c) for c in checkpoints)
        return cls(
            base=None if base is None else Path(base),
            checkpoints=paths,
            labels=tuple(labels) if labels is not None else tuple(default_labels(paths)),
            kinds=tuple(kinds) if kinds is not None else (None,) * len(paths),
            load=load if load is not None else LoadOptions(),
        )

    def absolute(self) -> AnalysisInputs:
        """The same inputs with absolute paths (a worker's working directory may differ)."""
        return replace(
            self,
            base=None if self.base is None else self.base.absolute(),
            checkpoints=tuple(c.absolute() for c in self.checkpoints),
        )

    def load_options(self, index: int, dtype: torch.dtype) -> LoadOptions:
        """The load settings of checkpoint ``index``: its forced kind, the compute dtype."""
        return replace(self.load, kind=self.kinds[index], dtype=dtype)


def open_selected(
    path: Path,
    *,
    base: TensorSource | None,
    load: LoadOptions,
    selects: Callable[[str], bool] | None = None,
) -> CheckpointReader:
    """:func:`~spectra.loaders.open_checkpoint`, except that a module the selection leaves out
    (``--modules`` / ``--exclude``) cannot make the checkpoint be refused: when the reader
    refuses a mismatched module (shape or dtype differs from the base, no base weight), the
    checkpoint is reopened skipping the mismatched modules, and it is refused still, naming
    the module, if the selection keeps any of them.

    Args:
        path: The checkpoint.
        base: The base's tensors, or None.
        load: The load settings (with ``skip_mismatched`` every mismatch is skipped anyway).
        selects: Module name → analysed? None: every module is.

    Raises:
        CheckpointMismatchError: A module the selection keeps does not match the base.
    """
    try:
        return open_checkpoint(path, base=base, options=load)
    except CheckpointMismatchError:
        if selects is None or load.skip_mismatched:
            raise
        reader = open_checkpoint(path, base=base, options=replace(load, skip_mismatched=True))
    report = reader.report
    dropped = dict(report.skipped)
    kept = [name for name in dropped if selects(name.removesuffix(".weight"))]
    if kept:
        raise CheckpointMismatchError(
            f"{dropped[kept[0]]}; leave it out with --exclude, or pass --skip-mismatched to "
            "analyse the modules that match",
            path=path,
            key=kept[0],
        )
    # left out by the user's own selection: one note saying so, instead of one per module
    report.notes[:] = [
        n
        for n in report.notes
        if not any(n.startswith(f"skipped {name!r} (") for name in dropped)
        and "modules (--skip-mismatched)" not in n
    ]
    name = next(iter(dropped))
    report.notes.append(
        f"{len(dropped)} modules that do not match the base are outside --modules/--exclude "
        f"and not analysed, e.g. {name!r}: {dropped[name]}"
    )
    return reader
