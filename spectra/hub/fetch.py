"""Fetching the selected files of one snapshot, and the shards of a sharded model that hold
the tensors needed (the rest of :func:`spectra.hub.resolve.from_hub`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from spectra.hub import client
from spectra.hub.client import Report, Snapshot
from spectra.hub.errors import HubNotFoundError
from spectra.hub.partial import PARTIAL_KEY, partial_model_dir
from spectra.hub.select import Selection, shards_for
from spectra.io.sharded import read_index
from spectra.loaders.align import align_modules

_WEIGHT = ".weight"


@dataclass
class Fetcher:
    """Fetches repo files of one snapshot, remembering which were downloaded now.

    Attributes:
        paths: Repo file → its local (cached) path, for every file fetched.
        downloaded: The files that were not in the cache, in order.
    """

    snapshot: Snapshot
    quiet: bool
    report: Report | None
    paths: dict[str, Path] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)

    def get(self, name: str) -> Path:
        """The local path of repo file ``name`` (one ``downloading ...`` line through
        ``report`` when it is not cached yet)."""
        if name in self.paths:
            return self.paths[name]
        if self.snapshot.online and name not in self.snapshot.files:
            raise HubNotFoundError(
                "needed but not in the repo (its index names it: the upload is incomplete)",
                path=f"{self.snapshot.hub_id.repo_id}@{self.snapshot.commit[:12]}/{name}",
            )
        cached = client.is_cached(self.snapshot, name)
        if not cached and self.report is not None and not self.quiet:
            self.report(
                f"downloading {self.snapshot.hub_id.repo_id}@{self.snapshot.commit[:12]}: {name}"
            )
        # the first file is asked for by branch / tag name, so that the cache records the
        # revision (refs/<name>) for offline runs; the others by commit
        by_ref = (
            not self.paths
            and self.snapshot.online
            and self.snapshot.hub_id.ref != self.snapshot.commit
        )
        self.paths[name] = client.fetch(self.snapshot, name, quiet=self.quiet, by_ref=by_ref)
        if not cached:
            self.downloaded.append(name)
        return self.paths[name]


def target_path(selection: Selection, fetcher: Fetcher) -> Path:
    """The local file the id names, or the local folder holding the selected files."""
    if selection.target in fetcher.paths:
        return fetcher.paths[selection.target]
    return fetcher.paths[selection.files[0]].parent


def fetch_sharded(
    selection: Selection,
    fetcher: Fetcher,
    needed_tensors: Collection[str] | None,
    where: str,
) -> tuple[Path, str | None]:
    """Fetch the index's shards that hold the needed tensors (all when None).

    Returns:
        (the path the loaders read: the index / its folder when every shard was needed, else
        a folder with an index of the fetched shards; ``"k of n shards"`` or None).
    """
    index_name = selection.files[0]
    index = fetcher.paths[index_name]
    weight_map, meta = read_index(index, fix="the repo's index is broken; report it upstream")
    metadata = {k: v for k, v in meta.items() if k != PARTIAL_KEY}
    needed = (
        None if needed_tensors is None else _base_keys(needed_tensors, weight_map, index, where)
    )
    shards, _ = shards_for(weight_map, needed)
    folder = PurePosixPath(index_name).parent.as_posix()
    prefix = "" if folder == "." else folder + "/"
    local = {s: fetcher.get(prefix + s) for s in shards}
    total = len(set(weight_map.values()))
    if len(shards) == total:
        return (index if selection.target == index_name else index.parent), None
    extras = [fetcher.paths[e] for e in selection.extras if e in fetcher.paths]
    tag = f"{fetcher.snapshot.hub_id.repo_id}-{fetcher.snapshot.commit[:12]}"
    path = partial_model_dir(index.name, weight_map, metadata, local, extras, tag=tag)
    return path, f"{len(shards)} of {total} shards"


def _base_keys(
    needed: Collection[str], weight_map: Mapping[str, str], index: Path, where: str
) -> set[str]:
    """The index keys of the needed tensors: exact names, and ``<module>.weight`` names matched
    to the index's modules by :func:`~spectra.loaders.align.align_modules`."""
    keys = {n for n in needed if n in weight_map}
    modules = {n.removesuffix(_WEIGHT) for n in needed if n.endswith(_WEIGHT) and n not in keys}
    base_modules = [k.removesuffix(_WEIGHT) for k in weight_map if k.endswith(_WEIGHT)]
    alignment = align_modules(modules, base_modules, path=where, base_path=index)
    return keys | {b + _WEIGHT for b in alignment.mapping.values()}
