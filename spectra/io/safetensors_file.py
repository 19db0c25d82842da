"""One ``.safetensors`` file, read one tensor at a time through ``safe_open`` (memory-mapped)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from spectra.errors import FileFormatError
from spectra.io._common import SortedKeys, check_file

# safetensors header dtype names → torch dtypes (the format's full list as of safetensors 0.4+).
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
}

_HOW_TO_FIX = "the file is truncated or not a safetensors file; download or save it again"


class SafetensorsFile(SortedKeys):
    """A :class:`~spectra.io.source.TensorSource` over one safetensors file.

    The header (names, dtypes, shapes, offsets, ``__metadata__``) is parsed and validated by
    the safetensors library on open; data is memory-mapped and read per :meth:`get`.

    Attributes:
        path: The file.
        metadata: The header's ``__metadata__`` string map ({} when absent).
        description: One line saying what was opened, for reports.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_file(self.path)
        try:
            # Kept open (not a ``with`` block): the handle holds the mmap that get() reads.
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            self._set_keys(self._handle.keys())
            self.metadata: dict[str, str] = dict(self._handle.metadata() or {})
        except SafetensorError as e:
            raise FileFormatError(
                f"cannot read safetensors header ({e}); {_HOW_TO_FIX}", path=self.path
            ) from e
        except OSError as e:  # removed, replaced or made unreadable since check_file
            raise FileFormatError(
                f"cannot open the file ({e.strerror or e}); check that it exists and is readable",
                path=self.path,
            ) from e
        self.description = f"safetensors file {self.path} ({len(self._keys)} tensors)"

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape from the header, without reading data."""
        return tuple(self._slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        """Stored dtype from the header, without reading data."""
        name = self._slice(key).get_dtype()
        if name not in _DTYPES:
            raise FileFormatError(
                f"tensor has dtype {name}, which spectra does not read; convert it to "
                "float32/bfloat16/float16",
                path=self.path,
                key=key,
            )
        return _DTYPES[name]

    def get(self, key: str) -> torch.Tensor:
        """One tensor in its stored dtype, on CPU."""
        self._require(key)
        try:
            return self._handle.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise FileFormatError(
                f"cannot read tensor ({e}); {_HOW_TO_FIX}", path=self.path, key=key
            ) from e

    def _slice(self, key: str):  # -> safetensors PySafeSlice (no public type)
        self._require(key)
        return self._handle.get_slice(key)
