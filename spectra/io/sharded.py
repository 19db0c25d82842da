"""A sharded checkpoint: an ``*.index.json`` weight map plus one file per shard.

Index layout (Hugging Face ``save_pretrained``): ``{"metadata": {...}, "weight_map":
{tensor_name: shard_file_name}}``, shard names relative to the index's directory (a name that
leaves it, ``../x`` or ``/abs/x``, or names another index, is refused). Keys come
from the weight map; each tensor is read from its shard when asked for. At most one shard is
open at a time, so memory is bounded by one shard's mapping, not the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from spectra.errors import FileFormatError
from spectra.io._common import SortedKeys, check_file, is_str_map
from spectra.io.jsonfile import read_json
from spectra.io.source import TensorSource

_INDEX_SUFFIX = ".index.json"


class ShardedCheckpoint(SortedKeys):
    """A :class:`~spectra.io.source.TensorSource` over an index file and its shards.

    Shapes and dtypes of a shard's tensors are remembered (tuples, no data) the first time
    the shard is opened, so listing every shape opens each shard once.

    Attributes:
        path: The index file.
        metadata: The index's ``metadata`` block, values converted to strings.
        description: One line saying what was opened.
    """

    def __init__(self, index: str | Path, open_file: Callable[[Path], TensorSource]):
        """Args:
        index: The ``*.index.json`` file.
        open_file: Opens one shard file (safetensors or torch) as a TensorSource.
        """
        self.path = Path(index)
        self._open_file = open_file
        check_file(self.path)
        self._weight_map, meta = read_index(self.path, fix="download or save it again")
        self.metadata = {str(k): str(v) for k, v in meta.items()}
        self._set_keys(self._weight_map)
        _check_shards(self.path, self._weight_map)
        self._current: tuple[str, TensorSource] | None = None
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        n = len(set(self._weight_map.values()))
        self.description = (
            f"sharded checkpoint {self.path} ({len(self._keys)} tensors in {n} shards)"
        )

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape, from the shard's header (or mmapped tensor); no data is read."""
        return self._shape_dtype(key)[0]

    def dtype(self, key: str) -> torch.dtype:
        """Stored dtype, from the shard's header (or mmapped tensor); no data is read."""
        return self._shape_dtype(key)[1]

    def get(self, key: str) -> torch.Tensor:
        """One tensor in its stored dtype, on CPU, read from its shard."""
        return self._shard(key).get(key)

    def _shape_dtype(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        if key not in self._meta:
            self._shard(key)  # opening a shard records all of its shapes/dtypes
        return self._meta[key]

    def _shard(self, key: str) -> TensorSource:
        """The open shard holding ``key``, opening it (and dropping the previous one) if needed."""
        self._require(key)
        name = self._weight_map[key]
        if self._current is None or self._current[0] != name:
            self._current = None  # release the previous shard before mapping the next
            source = self._open_file(self.path.parent / name)
            names = source.keys()  # TensorSource is not iterable
            for k in names:
                self._meta[k] = (source.shape(k), source.dtype(k))
            self._current = (name, source)
        source = self._current[1]
        if key not in source:
            raise FileFormatError(
                f"the index maps {key!r} to shard {name!r}, but that shard has no such tensor; "
                "the index and shards come from different saves: download or save them again",
                path=self.path,
                key=key,
            )
        return source


def read_index(index: Path, *, fix: str) -> tuple[dict[str, str], dict[str, Any]]:
    """``weight_map`` and ``metadata`` (as stored; {} when absent) of an index file, every
    shard name checked (:func:`_check_shard_name`) before any shard is opened or fetched.

    Args:
        index: The ``*.index.json`` file (a local one, or one fetched from the Hub).
        fix: What the user should do when the file is not JSON (ends the error line).

    Raises:
        FileFormatError: Not JSON, no string-to-string ``weight_map``, or a shard name that
            leaves the index's directory or names another index.
    """
    data = read_json(index, what="the index", fix=fix)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not is_str_map(weight_map):
        raise FileFormatError(
            "the index has no 'weight_map' object of tensor name → shard file name; "
            "is this a sharded-checkpoint index (model.safetensors.index.json)?",
            path=index,
            key="weight_map",
        )
    for key, shard in sorted(weight_map.items()):
        _check_shard_name(index, key, shard)
    meta = data.get("metadata")
    return dict(weight_map), dict(meta) if isinstance(meta, dict) else {}


def _check_shard_name(index: Path, key: str, shard: str) -> None:
    """A shard is a weights file inside the index's directory: the name is checked as text,
    before anything is opened, so an index cannot make spectra read files elsewhere
    (``../``, absolute paths) or open an index again (endless recursion)."""
    name = PurePosixPath(shard.replace("\\", "/"))  # a Windows-style name is checked alike
    if not name.parts or name.is_absolute() or ".." in name.parts or ":" in name.parts[0]:
        raise FileFormatError(
            f"the index names shard {shard!r}, which is not a file name inside {index.parent}; "
            "shards must sit beside the index: fix or regenerate the index",
            path=index,
            key=key,
        )
    if shard.lower().endswith(_INDEX_SUFFIX):
        raise FileFormatError(
            f"the index names shard {shard!r}, which is another index, not a weights file; "
            "fix or regenerate the index",
            path=index,
            key=key,
        )


def _check_shards(index: Path, weight_map: dict[str, str]) -> None:
    """Every shard the index names must exist (checked up front, before any work)."""
    first_key: dict[str, str] = {}
    for key in sorted(weight_map):
        first_key.setdefault(weight_map[key], key)
    for shard, key in sorted(first_key.items()):
        if not (index.parent / shard).is_file():
            raise FileFormatError(
                f"shard {shard!r} named in the index is missing from {index.parent} (needed for "
                f"{key!r} and maybe others); download or copy every shard the index lists",
                path=index,
                key=key,
            )
