"""Stream one tensor at a time out of a checkpoint into a widened buffer, in bounded memory.

Why not ``source.get``: safetensors' ``get`` returns a view into a memory map of the whole
file, and every page it touches stays resident (counted in RSS) until the file is closed, so
reading a checkpoint module by module ends with the whole checkpoint resident. Here
a safetensors tensor is read with plain ``read`` calls into one reused staging buffer per
thread (its stored bytes), then widened into the caller's float32/float64 tensor
(``copy_``) or subtracted from it in place (``sub_``), and the staging bytes are reused for
the next tensor. Peak memory is the output tensor plus the largest stored tensor, whatever
the file or shard size.

Sources other than spectra's safetensors containers (torch pickles, read by torch's own
``mmap=True`` loader; wrappers) fall back to ``source.get``.
"""

from __future__ import annotations

import json
import math
import struct
import threading
from pathlib import Path

import torch

from spectra.errors import FileFormatError
from spectra.io.safetensors_file import SafetensorsFile
from spectra.io.sharded import ShardedCheckpoint
from spectra.io.source import TensorSource

_SAFETENSORS = ".safetensors"
_INDEX = ".safetensors.index.json"
_MAX_READ = 1 << 30  # bytes per read() call: Linux returns at most ~2 GiB per call anyway
_CHUNK = 1 << 22  # elements subtracted at a time (16 MB of float32 temporary)

# One staging buffer per thread (dask runs tasks on threads): the bytes of the tensor being
# read, consumed by copy_/sub_ before the next read, so one buffer serves every stream.
_local = threading.local()


class TensorStream:
    """Widening reads of one :class:`~spectra.io.source.TensorSource`, one tensor at a time.

    Keys are resolved to (file, byte range) from the safetensors headers, parsed once per file
    on first use (the header only, never data). Nothing read is cached.

    Args:
        source: An open checkpoint (its keys, shapes and dtypes are trusted: the container
            validated them on open).
    """

    def __init__(self, source: TensorSource):
        self.source = source
        self._key_files = _key_files(source)  # key -> safetensors file, or {} to fall back
        self._offsets: dict[Path, dict[str, tuple[int, int]]] = {}

    def read_into(self, key: str, out: torch.Tensor, *, subtract: bool = False) -> torch.Tensor:
        """``out ← widen(tensor)`` or, with ``subtract``, ``out ← out − widen(tensor)``.

        Each stored element is widened to ``out.dtype`` before the subtraction (exact for
        bf16/fp16 → float32), so two close bf16 weights keep their difference.

        Args:
            key: Tensor name in the source.
            out: Contiguous float tensor with as many elements as the stored tensor (its shape
                may differ: a conv kernel (out, in, kh, kw) read into (out, in·kh·kw)).
            subtract: Subtract instead of copy.

        Returns:
            ``out``.

        Raises:
            ValueError: ``out`` has the wrong number of elements or is not contiguous.
            SpectraError: The container refuses the key (missing, unreadable).
        """
        if not out.is_contiguous() or out.numel() != math.prod(self.source.shape(key)):
            raise ValueError(
                f"{key}: cannot read {self.source.shape(key)} into {tuple(out.shape)}"
                + ("" if out.is_contiguous() else " (not contiguous)")
            )
        stored = self._stored(key).reshape(-1)  # (numel,) stored dtype
        flat = out.view(-1)  # (numel,) out.dtype
        if not subtract:
            flat.copy_(stored)  # widens element by element, no temporary
            return out
        # a mixed-dtype sub_ first widens the whole other operand into a temporary as large as
        # out; in slices the temporary is at most _CHUNK elements
        for start in range(0, flat.numel(), _CHUNK):
            flat[start : start + _CHUNK].sub_(stored[start : start + _CHUNK])
        return out

    def widened(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        """The tensor in a fresh ``dtype`` tensor (the caller owns it), stored shape."""
        out = torch.empty(self.source.shape(key), dtype=dtype)
        return self.read_into(key, out)

    def _stored(self, key: str) -> torch.Tensor:
        """The stored tensor: a view of the staging buffer (safetensors) or ``source.get``."""
        file = self._key_files.get(key)
        span = self._span(file, key) if file is not None else None
        if span is None:
            return self.source.get(key)  # raises the container's error for a bad key
        start, nbytes = span
        staging = _staging(nbytes)
        _read_exact(file, start, staging)
        return staging.view(self.source.dtype(key))

    def _span(self, file: Path, key: str) -> tuple[int, int] | None:
        """(absolute byte offset, byte count) of ``key`` in ``file``; None when the header
        does not agree with the container's shape/dtype (then the container reads it)."""
        if file not in self._offsets:
            self._offsets[file] = _header_offsets(file)
        span = self._offsets[file].get(key)
        if span is None:
            return None
        item = torch.empty((), dtype=self.source.dtype(key)).element_size()
        return span if span[1] == item * math.prod(self.source.shape(key)) else None


def stream_difference(
    tuned: TensorStream, tuned_key: str, base: TensorStream, base_key: str, dtype: torch.dtype
) -> torch.Tensor:
    """W_tuned − W_base of one weight: (out, in·kh·kw) in ``dtype``, each operand widened to
    ``dtype`` while it is read, the base subtracted in place (no second full-size tensor).
    The one place a dense ΔW is formed from two checkpoints; shapes are checked by callers."""
    shape = tuned.source.shape(tuned_key)
    delta = torch.empty(shape[0], math.prod(shape[1:]), dtype=dtype)  # (out, in·kh·kw)
    tuned.read_into(tuned_key, delta)  # delta = widen(W_tuned)
    base.read_into(base_key, delta, subtract=True)  # delta -= widen(W_base)
    return delta


def release_staging() -> None:
    """Free this thread's staging buffer (it is otherwise kept for the next read)."""
    _local.__dict__.pop("staging", None)


def staging_bytes() -> int:
    """Size of this thread's staging buffer (0 when none): the largest tensor read so far."""
    buf = getattr(_local, "staging", None)
    return 0 if buf is None else buf.numel()


def _staging(nbytes: int) -> torch.Tensor:
    """(nbytes,) uint8 view of this thread's staging buffer, grown when too small."""
    buf = getattr(_local, "staging", None)
    if buf is None or buf.numel() < nbytes:
        _local.staging = None  # drop the old buffer before allocating the larger one
        buf = _local.staging = torch.empty(nbytes, dtype=torch.uint8)
    return buf[:nbytes]


def _read_exact(file: Path, start: int, dest: torch.Tensor) -> None:
    """Fill ``dest`` (uint8) with the bytes of ``file`` from ``start`` (plain reads, no mmap)."""
    view = memoryview(dest.numpy()).cast("B")
    with open(file, "rb", buffering=0) as f:
        f.seek(start)
        done = 0
        while done < len(view):
            n = f.readinto(view[done : done + _MAX_READ])
            if not n:
                raise FileFormatError(
                    f"the file ends at byte {start + done}, inside a tensor its header "
                    "describes: it is truncated; download or save it again",
                    path=file,
                )
            done += n


def _key_files(source: TensorSource) -> dict[str, Path]:
    """Which safetensors file holds each key; {} when the source is not one of spectra's
    safetensors containers (a wrapper or another container may transform what it returns)."""
    path = Path(source.path)
    if type(source) is SafetensorsFile:
        return dict.fromkeys(source.keys(), path)
    if type(source) is ShardedCheckpoint and path.name.lower().endswith(_INDEX):
        # already validated by the container on open (every shard exists)
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        return {
            k: path.parent / f for k, f in weight_map.items() if f.lower().endswith(_SAFETENSORS)
        }
    return {}


def _header_offsets(file: Path) -> dict[str, tuple[int, int]]:
    """key → (absolute byte offset, byte count) from a safetensors header.

    Layout: 8-byte little-endian header length n, n bytes of JSON
    ``{key: {"dtype", "shape", "data_offsets": [begin, end]}}`` (offsets relative to the data
    section, which starts at 8 + n).
    """
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    return {
        k: (base + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0])
        for k, v in header.items()
        if k != "__metadata__"
    }
