"""From a command-line checkpoint argument to a local path the loaders read.

A local file or directory that exists always wins. Otherwise the argument is read as a Hub id
(:mod:`spectra.hub.ids`); its revision is resolved and listed (:mod:`spectra.hub.client`), the
files an analysis needs are chosen (:mod:`spectra.hub.select`) and fetched through the
huggingface_hub cache, and the path handed back is the cached snapshot folder or file, or, for
a base of which only some shards were needed, a folder with an index of those shards
(:mod:`spectra.hub.partial`).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spectra.errors import FileFormatError
from spectra.hub import client
from spectra.hub.client import Report
from spectra.hub.errors import INSTALL_HINT, HubError, HubExtraMissingError, HubNotFoundError
from spectra.hub.fetch import Fetcher, fetch_sharded, target_path
from spectra.hub.ids import SCHEME, HubId, has_scheme, parse_hub_id
from spectra.hub.select import select
from spectra.io.jsonfile import fields_as_json

Role = Literal["checkpoint", "base"]


@dataclass(frozen=True)
class HubSource:
    """Where a checkpoint resolved from the Hub came from (recorded with the result).

    Attributes:
        id: The id, written out (``hf://org/name@rev/path``).
        repo_id: ``org/name``.
        revision: The revision asked for (``main`` when none was).
        commit: The commit it resolved to.
        files: The repo files used, ``/``-separated.
        downloaded: Those of ``files`` that were not in the cache and were downloaded now.
        online: Whether the Hub was asked (else the cache alone was read).
        partial: ``"k of n shards"`` when only some shards of a sharded model were needed.
    """

    id: str
    repo_id: str
    revision: str
    commit: str
    files: tuple[str, ...]
    downloaded: tuple[str, ...] = ()
    online: bool = True
    partial: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: id, repo_id, revision, commit, files, downloaded, online, partial."""
        return fields_as_json(self)


@dataclass(frozen=True)
class Resolved:
    """One checkpoint argument, resolved.

    Attributes:
        text: The argument as given.
        path: The local file or directory the loaders read.
        hub: Where it came from, or None for a local path.
        named_by: For a base no one gave: the checkpoint argument whose adapter config
            named it.
    """

    text: str
    path: Path
    hub: HubSource | None = None
    named_by: str | None = None

    @property
    def label(self) -> str | None:
        """A label for a Hub checkpoint (the repo's name or the last part of its path); None
        for a local path (the file name labels it)."""
        if self.hub is None:
            return None
        hub_id = parse_hub_id(self.hub.id)
        return hub_id.label if hub_id is not None else None


def resolve(
    arg: str | os.PathLike[str],
    *,
    role: Role = "checkpoint",
    needed_tensors: Collection[str] | None = None,
    quiet: bool = False,
    report: Report | None = None,
) -> Path:
    """The local path of a checkpoint argument: itself when it exists, else the files of the
    Hub id it names, fetched (only those needed) into the huggingface_hub cache.

    Args:
        arg: A local path, or a Hub id (``org/name[@rev][/path]`` or ``hf://...``).
        role: ``"checkpoint"`` (an adapter, MultiLoRA or full checkpoint) or ``"base"`` (a
            model; an adapter repo is refused).
        needed_tensors: For a sharded model: the tensors the analysis reads, named as the
            checkpoint names them (``<module>.weight``); they are matched to the index's keys
            by the rule of :func:`spectra.loaders.align.align_modules` (a differing leading
            prefix is tolerated) and only the shards holding them are fetched. None: all.
        quiet: No progress output.
        report: Receives one line per file downloaded (progress).

    Returns:
        A file or directory :func:`spectra.loaders.open_checkpoint` /
        :func:`spectra.io.open_tensors` read.

    Raises:
        HubIdError: ``hf://`` followed by something that is not a model id.
        HubNotFoundError: Repo, revision, path or weights not found (message says both
            readings when the argument could also have been a local path).
        HubUnavailableError: Offline / no network and the files are not cached.
        HubExtraMissingError: huggingface_hub is not installed.
        FileFormatError: Not a path that exists and not a Hub id.
    """
    return locate(arg, role=role, needed_tensors=needed_tensors, quiet=quiet, report=report).path


def locate(
    arg: str | os.PathLike[str],
    *,
    role: Role = "checkpoint",
    needed_tensors: Collection[str] | None = None,
    quiet: bool = False,
    report: Report | None = None,
) -> Resolved:
    """:func:`resolve`, also saying where the files came from (:class:`Resolved`)."""
    text = os.fspath(arg)
    if not has_scheme(text) and Path(text).exists():
        return Resolved(text, Path(text))
    hub_id = parse_hub_id(text)
    if hub_id is None:
        raise FileFormatError(f"no such file or directory; check the path{_hint(text)}", path=text)
    if hub_id.explicit:
        return from_hub(
            hub_id, role=role, needed_tensors=needed_tensors, quiet=quiet, report=report
        )
    try:
        return from_hub(
            hub_id, role=role, needed_tensors=needed_tensors, quiet=quiet, report=report
        )
    except HubExtraMissingError as e:
        raise HubExtraMissingError(
            f"no such local file or directory; read as the Hub id {hub_id} it needs "
            f"huggingface_hub: {INSTALL_HINT}",
            path=text,
        ) from e
    except HubError as e:
        raise type(e)(
            f"no such local file or directory, and read as the Hub id {e.path or hub_id}: "
            f"{e.detail}",
            path=text,
        ) from e


def from_hub(
    hub_id: HubId,
    *,
    role: Role = "checkpoint",
    needed_tensors: Collection[str] | None = None,
    quiet: bool = False,
    report: Report | None = None,
) -> Resolved:
    """Fetch what ``hub_id`` needs (see :func:`resolve`; no local-path reading)."""
    snapshot = client.open_snapshot(hub_id)
    selection = select(hub_id, snapshot.files)
    if role == "base" and selection.layout == "adapter":
        raise HubNotFoundError(
            "this is an adapter (adapter_config.json), not a base model; pass the base model's "
            "id or path as the base",
            path=str(hub_id),
        )
    fetcher = Fetcher(snapshot, quiet=quiet, report=report)
    for name in selection.files:
        fetcher.get(name)
    for name in selection.extras:
        if name in snapshot.files:
            fetcher.get(name)
    partial = None
    if selection.layout == "sharded":
        path, partial = fetch_sharded(selection, fetcher, needed_tensors, str(hub_id))
    else:
        path = target_path(selection, fetcher)
    source = HubSource(
        id=str(hub_id),
        repo_id=hub_id.repo_id,
        revision=hub_id.ref,
        commit=snapshot.commit,
        files=tuple(fetcher.paths),
        downloaded=tuple(fetcher.downloaded),
        online=snapshot.online,
        partial=partial,
    )
    return remember(Resolved(str(hub_id), path, source))


# What this process fetched from the Hub: local path → its Resolved. Lets the command line
# label a checkpoint and record its id and commit in the result from the path alone.
_RESOLVED: dict[Path, Resolved] = {}


def remember(resolved: Resolved) -> Resolved:
    """Record ``resolved`` under its local path (:func:`resolved_from`); returns it."""
    _RESOLVED[resolved.path.absolute()] = resolved
    return resolved


def resolved_from(path: str | os.PathLike[str]) -> Resolved | None:
    """How ``path`` was obtained, when this process fetched it from the Hub (else None)."""
    return _RESOLVED.get(Path(path).absolute())


def record_sources(result: dict[str, Any]) -> dict[str, Any]:
    """Replace the local paths of Hub checkpoints in an analysis result's ``base`` and
    ``inputs`` by their ids as given, adding a ``hub`` entry each (:meth:`HubSource.as_dict`:
    repo, revision, commit, files). Returns ``result``."""
    entries = [result.get("base"), *result.get("inputs", [])]
    for entry in entries:
        if isinstance(entry, dict) and "path" in entry:
            found = resolved_from(entry["path"])
            if found is not None:
                annotate(entry, found)
    return result


def annotate(entry: dict[str, Any], resolved: Resolved) -> None:
    """Write where ``resolved`` came from into a result's ``base`` or ``inputs[i]`` entry:
    ``path`` the argument (the id for the Hub), ``hub`` its :meth:`HubSource.as_dict`,
    ``named_by`` the adapter whose config named a base."""
    entry["path"] = resolved.text
    if resolved.hub is not None:
        entry["hub"] = resolved.hub.as_dict()
    if resolved.named_by is not None:
        entry["named_by"] = resolved.named_by


def _hint(text: str) -> str:
    """For a bare name that could be a repo without namespace (``gpt2``)."""
    if "/" in text or "\\" in text or "." in text:
        return ""
    return f" (for the Hub model {text!r} write {SCHEME}{text})"
