"""The base and checkpoints of one command, resolved together.

The checkpoints are resolved first; their module lists say which base tensors the analysis
reads, so a sharded base is fetched only in the shards that hold them. When no base is given
and the analysis wants one, a PEFT adapter's ``base_model_name_or_path`` (at its
``revision``) names it: a local path that exists, else a Hub id resolved the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError
from spectra.hub.client import Report
from spectra.hub.errors import HubError, HubNotFoundError
from spectra.hub.ids import has_scheme, parse_named_base
from spectra.hub.resolve import Resolved, annotate, from_hub, locate, remember, resolved_from
from spectra.inputs import default_labels
from spectra.loaders import LoadOptions, detect_kind, open_checkpoint
from spectra.loaders.detect import find_peft_files, read_adapter_config

# kinds whose module names are known from the files alone (no base needed to name them)
_NAMED_KINDS = ("lora", "dora", "multilora")


@dataclass(frozen=True)
class ResolvedInputs:
    """The inputs of one command as local paths, and where each came from.

    Attributes:
        base: The base, or None (none given, none named, or not wanted).
        checkpoints: The checkpoints, in the order given.
        base_named_by: The checkpoint argument whose adapter config named the base, when the
            base was not given.
    """

    base: Resolved | None
    checkpoints: tuple[Resolved, ...]
    base_named_by: str | None = None

    @property
    def base_path(self) -> Path | None:
        return None if self.base is None else self.base.path

    @property
    def paths(self) -> list[Path]:
        return [c.path for c in self.checkpoints]

    def labels(self) -> list[str]:
        """One unique label per checkpoint (:func:`labels_for`)."""
        return labels_for(self.paths)

    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        """Write the ids as given and the Hub sources (repo, revision, commit, files) into an
        analysis result's ``base`` and ``inputs`` entries; returns ``result``."""
        if self.base is not None:
            entry = result.get("base") or {}
            annotate(entry, self.base)
            result["base"] = entry
        for entry, ckpt in zip(result.get("inputs", []), self.checkpoints, strict=False):
            annotate(entry, ckpt)
        return result


def resolve_inputs(
    base: str | Path | None,
    checkpoints: Sequence[str | Path],
    *,
    want_base: bool,
    load: LoadOptions | None = None,
    quiet: bool = False,
    report: Report | None = None,
) -> ResolvedInputs:
    """Resolve every argument of a command (local paths win; Hub ids are fetched).

    Args:
        base: The base argument, or None.
        checkpoints: The checkpoint arguments.
        want_base: The analysis uses a base when there is one (base metrics on): without
            ``base``, the base a Hub adapter's config names is resolved (:func:`base_for`);
            if that fails the analysis goes on without it (one note through ``report``),
            unless a checkpoint cannot be read without its base (:func:`requires_base`),
            when it is an error.
        load: How the checkpoints are read (forced kind, α), for listing their modules.
        quiet: No progress output.
        report: Receives the progress and note lines.

    Raises:
        SpectraError: An argument is neither an existing path nor a Hub id that resolves.
    """
    ckpts = tuple(locate(c, role="checkpoint", quiet=quiet, report=report) for c in checkpoints)
    resolved, named_by = base_for(
        base, [c.path for c in ckpts], want_base=want_base, load=load, quiet=quiet, report=report
    )
    return ResolvedInputs(resolved, ckpts, base_named_by=named_by)


def base_for(
    base: str | Path | None,
    checkpoints: Sequence[Path],
    *,
    want_base: bool,
    load: LoadOptions | None = None,
    quiet: bool = False,
    report: Report | None = None,
) -> tuple[Resolved | None, str | None]:
    """The base of an analysis of ``checkpoints`` (local paths, already resolved).

    A given base is a local path, or a Hub model fetched in the shards the checkpoints need.
    Without one, the base a PEFT adapter's config names is resolved when a checkpoint cannot
    be read without it (:func:`requires_base`), or when ``want_base`` and a checkpoint came
    from the Hub (local inputs never cause a download unless their ΔW needs the base);
    :func:`resolve_inputs` says what happens when it fails.

    Returns:
        (the base or None, the checkpoint argument whose config named it or None).
    """
    if base is not None:
        if _is_existing_path(base):
            return locate(base, role="base"), None
        needed = needed_tensors(checkpoints, load)
        return locate(base, role="base", needed_tensors=needed, quiet=quiet, report=report), None
    required = any(requires_base(c) for c in checkpoints)
    # local inputs stay local: a named base is fetched for base metrics only when an adapter
    # came from the Hub itself; a local adapter gets it only when it cannot be read without
    from_hub_too = any(resolved_from(c) is not None for c in checkpoints)
    named = next(((c, n) for c in checkpoints if (n := named_base(c)) is not None), None)
    if named is None or not (required or (want_base and from_hub_too)):
        return None, None
    ckpt, (name, revision) = named
    text = _argument(ckpt)
    try:
        resolved = _resolve_named(name, revision, checkpoints, load, quiet=quiet, report=report)
    except HubError as e:
        if required:
            raise HubNotFoundError(
                f"this adapter needs its base, and the base its config names could not be "
                f"resolved ({e}); pass --base",
                path=text,
            ) from e
        if report is not None:
            report(
                f"note: no base metrics: the base named by {text} is not available ({e}); pass --base"
            )
        return None, None
    if report is not None:
        where = (
            f"{resolved.hub.id} (commit {resolved.hub.commit[:12]})"
            if resolved.hub is not None
            else str(resolved.path)
        )
        report(f"base: {where}, named in the adapter config of {text}")
    return remember(replace(resolved, named_by=text)), text


def labels_for(checkpoints: Sequence[Path]) -> list[str]:
    """One unique label per checkpoint path: the repo's name (or the last part of the id's
    path) for a checkpoint this process fetched from the Hub, the file name for a local one
    (:func:`spectra.inputs.default_labels`)."""
    stems = []
    for path in checkpoints:
        found = resolved_from(path)
        stems.append((found.label if found is not None else None) or default_labels([path])[0])
    labels: list[str] = []
    for stem in stems:
        label, i = stem, 2
        while label in labels:
            label, i = f"{stem}-{i}", i + 1
        labels.append(label)
    return labels


def named_base(checkpoint: Path) -> tuple[str, str | None] | None:
    """``(base_model_name_or_path, revision)`` of a PEFT adapter's config; None when the
    checkpoint is no PEFT adapter or names no base."""
    files = find_peft_files(checkpoint) if checkpoint.exists() else None
    if files is None:
        return None
    config = read_adapter_config(files[0])
    name, revision = config.get("base_model_name_or_path"), config.get("revision")
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip(), revision if isinstance(revision, str) and revision else None


def requires_base(checkpoint: Path) -> bool:
    """Whether a checkpoint's ΔW cannot be formed without the base: a full fine-tune, DoRA,
    or a PEFT adapter with ``modules_to_save``."""
    try:
        kind = detect_kind(checkpoint)
    except SpectraError:
        return False  # the loader says what is wrong with it, later
    if kind in ("full", "dora"):
        return True
    files = find_peft_files(checkpoint)
    return files is not None and bool(read_adapter_config(files[0]).get("modules_to_save"))


def needed_tensors(checkpoints: Sequence[Path], load: LoadOptions | None = None) -> set[str] | None:
    """The tensors of the base an analysis of these checkpoints reads, named as the
    checkpoints name their modules (``<module>.weight``); None when a checkpoint's modules
    cannot be listed without the base (full fine-tunes, kohya names): then every tensor."""
    names: set[str] = set()
    for path in checkpoints:
        try:
            kind = (load.kind if load is not None else None) or detect_kind(path)
            if kind not in _NAMED_KINDS:
                return None
            options = LoadOptions(kind=kind) if load is None else _with_kind(load, kind)
            reader = open_checkpoint(path, base=None, options=options)
        except SpectraError:
            return None  # read again with the base, where the error is reported
        names.update(m.module + ".weight" for m in reader.modules())
    return names


def _resolve_named(
    name: str,
    revision: str | None,
    checkpoints: list[Path],
    load: LoadOptions | None,
    *,
    quiet: bool,
    report: Report | None,
) -> Resolved:
    if revision is None and _is_existing_path(name):
        return locate(name, role="base")
    hub_id = parse_named_base(name, revision)
    if hub_id is None:
        raise HubNotFoundError(
            "is neither a local path nor a Hub id", path=f"base_model_name_or_path {name!r}"
        )
    needed = needed_tensors(checkpoints, load)
    return from_hub(hub_id, role="base", needed_tensors=needed, quiet=quiet, report=report)


def _argument(path: Path) -> str:
    """The argument a local path was resolved from (the Hub id), or the path."""
    found = resolved_from(path)
    return found.text if found is not None else str(path)


def _is_existing_path(arg: str | Path) -> bool:
    text = str(arg)
    return not has_scheme(text) and Path(text).exists()


def _with_kind(load: LoadOptions, kind: Any) -> LoadOptions:
    return replace(load, kind=kind)
