"""The one place spectra talks to ``huggingface_hub``: list a repo at a revision, fetch files.

Everything goes through the library, so its environment variables keep their meaning:
``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache is), ``HF_HUB_OFFLINE`` (no network),
``HF_TOKEN`` (private and gated repos), ``HF_ENDPOINT`` (a mirror),
``HF_HUB_DISABLE_PROGRESS_BARS``. Files are fetched one by one with ``hf_hub_download`` at the
commit the listing resolved, so a branch that moves during a run cannot mix two commits, and a
file already in the cache is not downloaded again.

The listing: online, the repo's file list at that commit (``HfApi.model_info``, one API call);
offline, or when the Hub cannot be reached, the files of the cached snapshot of that revision
(what can be read without network).

``huggingface_hub`` is the optional ``hub`` extra: it is imported when a Hub id is resolved,
never when spectra starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from spectra.hub.errors import (
    INSTALL_HINT,
    HubExtraMissingError,
    HubNotFoundError,
    HubUnavailableError,
)
from spectra.hub.ids import HubId

Report = Callable[[str], None]


def huggingface_hub() -> ModuleType:
    """The ``huggingface_hub`` module (imported on first use: it is an optional extra).

    Raises:
        HubExtraMissingError: It is not installed.
    """
    try:
        hf = importlib.import_module("huggingface_hub")
        for submodule in ("constants", "errors", "file_download"):  # loaded lazily by the package
            importlib.import_module(f"huggingface_hub.{submodule}")
        return hf
    except ImportError as e:
        raise HubExtraMissingError(
            f"reading checkpoints from the Hugging Face Hub needs huggingface_hub: {INSTALL_HINT}"
        ) from e


@dataclass(frozen=True)
class Snapshot:
    """One model repo at one commit, as far as spectra can read it now.

    Attributes:
        hub_id: The id asked for.
        commit: The commit hash the revision resolved to.
        files: Paths of the files, ``/``-separated from the repo root: the repo's (online) or
            the cached ones (offline).
        online: Whether the listing came from the Hub (else from the cache).
        why_offline: Offline only: why the Hub was not asked (offline mode, or the error).
    """

    hub_id: HubId
    commit: str
    files: frozenset[str]
    online: bool
    why_offline: str = ""


def open_snapshot(hub_id: HubId) -> Snapshot:
    """Resolve ``hub_id``'s revision to a commit and list its files (module docstring).

    Raises:
        HubNotFoundError: The repo (or, online, the revision) does not exist or is not
            accessible with the token at hand.
        HubUnavailableError: The Hub cannot be asked and the revision is not cached.
    """
    hf = huggingface_hub()
    if hf.constants.is_offline_mode():
        return _cached_snapshot(hub_id, why="HF_HUB_OFFLINE is set")
    try:
        info = hf.HfApi().model_info(hub_id.repo_id, revision=hub_id.ref)
    except hf.errors.RevisionNotFoundError as e:
        raise HubNotFoundError(
            f"the repo has no revision {hub_id.ref!r} (a branch, tag or commit hash) at "
            f"{_endpoint()}; check the part after '@'",
            path=str(hub_id),
        ) from e
    except hf.errors.GatedRepoError as e:
        raise HubNotFoundError(
            "the repo is gated: accept its terms on the Hub and set HF_TOKEN (or `hf auth login`)",
            path=str(hub_id),
        ) from e
    except hf.errors.RepositoryNotFoundError as e:
        raise HubNotFoundError(
            f"no model repo {hub_id.repo_id!r} at {_endpoint()} (or it is private: set "
            "HF_TOKEN to a token that can read it)",
            path=str(hub_id),
        ) from e
    except _unreachable_errors(hf) as e:
        return _cached_snapshot(hub_id, why=f"{_endpoint()} could not be reached ({_short(e)})")
    if not info.sha:
        raise HubUnavailableError(
            f"{_endpoint()} returned no commit for revision {hub_id.ref!r}; is HF_ENDPOINT a "
            "Hugging Face Hub?",
            path=str(hub_id),
        )
    files = frozenset(s.rfilename for s in (info.siblings or []))
    return Snapshot(hub_id, info.sha, files, online=True)


def fetch(snapshot: Snapshot, filename: str, *, quiet: bool = False, by_ref: bool = False) -> Path:
    """The local path of one repo file at the snapshot's commit: from the cache, or
    downloaded into it (with huggingface_hub's progress bar on stderr unless ``quiet``).

    Args:
        snapshot: From :func:`open_snapshot`.
        filename: Path from the repo root, ``/``-separated.
        quiet: No progress bar.
        by_ref: Ask by the revision's name (branch or tag) instead of the commit, so that
            huggingface_hub records ``refs/<name>`` in the cache and a later offline run finds
            the revision; the commit served must still be the snapshot's.

    Raises:
        HubNotFoundError: The file is not in the repo.
        HubUnavailableError: It is not cached and the Hub cannot be reached, or the revision
            moved to another commit while spectra was reading it.
    """
    hf = huggingface_hub()
    revision = snapshot.hub_id.ref if by_ref else snapshot.commit
    kwargs: dict[str, Any] = {"revision": revision}
    if quiet:
        kwargs["tqdm_class"] = _silent_tqdm()
    where = f"{snapshot.hub_id.repo_id}@{snapshot.commit[:12]}/{filename}"
    try:
        path = Path(hf.hf_hub_download(snapshot.hub_id.repo_id, filename, **kwargs))
        if by_ref and snapshot.commit not in path.parts:
            raise HubUnavailableError(
                f"revision {revision!r} moved to another commit while spectra read it; run again",
                path=where,
            )
        return path
    except hf.errors.RemoteEntryNotFoundError as e:
        raise HubNotFoundError(
            "the repo lists this file but the Hub does not serve it; try again or pass the "
            "revision explicitly",
            path=where,
        ) from e
    except hf.errors.LocalEntryNotFoundError as e:
        raise HubUnavailableError(
            f"not in the local cache ({hf.constants.HF_HUB_CACHE}) and {_no_network(snapshot, hf)}",
            path=where,
        ) from e
    except _unreachable_errors(hf) as e:
        raise HubUnavailableError(
            f"download failed ({_short(e)}); check the connection and try again", path=where
        ) from e


def is_cached(snapshot: Snapshot, filename: str) -> bool:
    """Whether the file of this commit is in the local cache (no network)."""
    hf = huggingface_hub()
    found = hf.try_to_load_from_cache(snapshot.hub_id.repo_id, filename, revision=snapshot.commit)
    return isinstance(found, str)


def _cached_snapshot(hub_id: HubId, *, why: str) -> Snapshot:
    """The snapshot of ``hub_id``'s revision in the local cache, listed from disk.

    The revision resolves as huggingface_hub resolves it offline: a commit hash is its own
    snapshot folder, a branch or tag is looked up in the repo's ``refs/``.
    """
    hf = huggingface_hub()
    cache = Path(hf.constants.HF_HUB_CACHE)
    repo_dir = cache / hf.file_download.repo_folder_name(repo_id=hub_id.repo_id, repo_type="model")
    commit = hub_id.ref
    if not hf.file_download.REGEX_COMMIT_HASH.fullmatch(commit):
        ref = repo_dir / "refs" / commit
        commit = ref.read_text().strip() if ref.is_file() else ""
    snapshot = repo_dir / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        raise HubUnavailableError(
            f"revision {hub_id.ref!r} is not in the local cache ({cache}) and {why}; run once "
            "with network access (HF_HUB_OFFLINE unset) or point HF_HUB_CACHE / HF_HOME at a "
            "cache that holds it",
            path=str(hub_id),
        )
    files = frozenset(
        p.relative_to(snapshot).as_posix()
        for p in snapshot.rglob("*")
        if p.is_file()  # follows the symlinks into blobs/: a dangling one is not cached
    )
    return Snapshot(hub_id, commit, files, online=False, why_offline=why)


def _unreachable_errors(hf: ModuleType) -> tuple[type[BaseException], ...]:
    """The errors that mean "the Hub cannot be asked now" (as huggingface_hub's own
    ``snapshot_download`` treats them): offline mode, no connection, timeouts, server errors."""
    httpx = importlib.import_module("httpx2")  # huggingface_hub's HTTP client
    return (
        hf.errors.OfflineModeIsEnabled,
        httpx.TransportError,
        hf.errors.HfHubHTTPError,
        hf.errors.FileMetadataError,
    )


def _no_network(snapshot: Snapshot, hf: ModuleType) -> str:
    if hf.constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set: unset it to download"
    if not snapshot.online:
        return f"{snapshot.why_offline}: try again with network access"
    return f"{_endpoint()} could not be reached: check the connection and try again"


def _endpoint() -> str:
    return str(huggingface_hub().constants.ENDPOINT)


def _short(error: BaseException) -> str:
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0]}" if first else type(error).__name__


def _silent_tqdm() -> type:
    tqdm = importlib.import_module("tqdm.auto").tqdm

    class Silent(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
