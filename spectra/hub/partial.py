"""A sharded model of which only some shards were fetched, readable by the existing loaders.

:class:`~spectra.io.sharded.ShardedCheckpoint` requires every shard its index names (a missing
shard is a broken download). For a base fetched partly on purpose, spectra writes a new index
naming only the tensors of the fetched shards into a temporary folder, beside links to the
cached shard files (symbolic links; a copy where the file system has none). The folder is
removed when the process ends; the cache is never written to.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

PARTIAL_KEY = "spectra_partial"  # metadata entry of the written index: "k of n shards"


def partial_model_dir(
    index_name: str,
    weight_map: Mapping[str, str],
    metadata: Mapping[str, object],
    shards: Mapping[str, Path],
    extras: Sequence[Path] = (),
    *,
    tag: str,
) -> Path:
    """A folder holding an index restricted to ``shards`` and links to them.

    Args:
        index_name: File name of the index to write (``model.safetensors.index.json``).
        weight_map: The full index's tensor name → shard name.
        metadata: The full index's ``metadata`` block (kept, plus :data:`PARTIAL_KEY`).
        shards: Shard name → its local (cached) file, for the shards fetched.
        extras: Other files linked in by name (``config.json``).
        tag: Readable part of the folder name (repo and commit).

    Returns:
        The folder (removed at exit).
    """
    folder = Path(tempfile.mkdtemp(prefix=f"spectra-hub-{_safe(tag)}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for name, source in shards.items():
        _link(source, folder / name)
    for source in extras:
        _link(source, folder / source.name)
    kept = {k: v for k, v in weight_map.items() if v in shards}
    total = len(set(weight_map.values()))
    meta = {**metadata, PARTIAL_KEY: f"{len(shards)} of {total} shards"}
    (folder / index_name).write_text(json.dumps({"metadata": meta, "weight_map": kept}, indent=1))
    return folder


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # no symlinks here (Windows without the privilege): copy
        shutil.copyfile(source, target)


def _safe(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in tag)[:60]
