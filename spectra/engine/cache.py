"""A cache of W0's left singular vectors across runs (what intruder dimensions need of W0).

Comparing several fine-tunes against one base in separate runs would otherwise repeat the
full SVD of every base weight. An entry is keyed by the content of the matrix the SVD is
computed from (a BLAKE2b hash of the bytes of W0 widened to the compute dtype, which follow
from the stored bytes), its shape and dtype, the device type and :data:`CACHE_FORMAT_VERSION`,
so an edited base, another dtype or a new cache format never reads an old entry.

Location: ``$SPECTRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/spectra``, else ``~/.cache/spectra``;
entries are ``w0-left/<key>.safetensors`` (out·min(out, in) values each: 64 MiB for a float32
4096 × 4096 weight). Delete the folder to clear it; ``--no-cache`` neither reads nor writes it.

Safety: entries are written atomically (temporary file, then rename). A read entry is used
only if its recorded key, format version, shape and dtype match, the checksum of its data
matches the one stored beside it, and its columns pass an orthonormality check (Xᵀ(X S) = S
for a random (m, 4) S, to float tolerance); anything else (a truncated or edited file, another
version) is recomputed and overwritten, never trusted. A cache folder that cannot be written
only costs the recomputation next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from spectra.errors import SpectraError
from spectra.io.atomic import atomic_path

CACHE_FORMAT_VERSION = "1"
# W0 with min(out, in) below this are recomputed: their SVD is faster than a file round trip.
CACHE_MIN_SIDE = 256
_ENTRY_DIR = "w0-left"


def cache_dir() -> Path:
    """``$SPECTRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/spectra``, else ``~/.cache/spectra``."""
    explicit = os.environ.get("SPECTRA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "spectra"


def content_key(w0: torch.Tensor, device_type: str) -> str:
    """Hex BLAKE2b of (format version, kind, dtype, shape, device type, bytes of ``w0``)."""
    h = hashlib.blake2b(digest_size=20)
    head = (
        f"spectra-cache {CACHE_FORMAT_VERSION} w0-left {w0.dtype} {tuple(w0.shape)} {device_type}"
    )
    h.update(head.encode())
    h.update(_bytes(w0))
    return h.hexdigest()


def _bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().cpu().contiguous().view(torch.uint8).numpy())


def _checksum(t: torch.Tensor) -> str:
    return hashlib.blake2b(_bytes(t), digest_size=20).hexdigest()


@dataclass(frozen=True)
class LeftVectorCache:
    """W0's left singular vectors on disk. ``root=None`` disables it (``--no-cache``).

    Attributes:
        root: The cache folder (see :func:`cache_dir`), or None.
    """

    root: Path | None

    def left_vectors(
        self,
        w0: torch.Tensor,
        device_type: str,
        compute: Callable[[], torch.Tensor | None],
    ) -> torch.Tensor | None:
        """The cached (out, m) left vectors of ``w0`` (m = min(out, in)), or ``compute()``'s,
        stored for next time. ``w0`` is the widened matrix the SVD is computed from."""
        if self.root is None or min(w0.shape) < CACHE_MIN_SIDE:
            return compute()
        key = content_key(w0, device_type)
        path = self.root / _ENTRY_DIR / f"{key}.safetensors"
        expected = (w0.shape[0], min(w0.shape))
        cached = _read(path, key, expected, w0.dtype)
        if cached is not None:
            return cached
        left = compute()
        if left is not None:
            _write(path, key, left)
        return left


def _read(path: Path, key: str, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor | None:
    """The entry's tensor when every check passes; None (recompute) otherwise."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            left = f.get_tensor("left")
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):  # unreadable
        return None
    ok = (
        meta.get("format") == CACHE_FORMAT_VERSION
        and meta.get("key") == key
        and tuple(left.shape) == shape
        and left.dtype == dtype
        and meta.get("checksum") == _checksum(left)
        and _orthonormal(left)
    )
    return left if ok else None


def _orthonormal(x: torch.Tensor) -> bool:
    """Xᵀ(X S) ≈ S for a random (m, 4) S: cheap (O(out·m)) evidence of orthonormal columns."""
    if not bool(torch.isfinite(x).all()):
        return False
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(x.shape[1], 4, generator=gen, dtype=torch.float64).to(x.dtype)
    err = float(torch.linalg.matrix_norm(x.T @ (x @ s) - s)) / float(torch.linalg.matrix_norm(s))
    return err <= 1e-3 if x.dtype == torch.float32 else err <= 1e-8


def _write(path: Path, key: str, left: torch.Tensor) -> None:
    """Store atomically; a folder that cannot be written is left alone (recomputed next time)."""
    meta = {"format": CACHE_FORMAT_VERSION, "key": key, "checksum": _checksum(left)}
    with contextlib.suppress(SpectraError, OSError, SafetensorError), atomic_path(path) as tmp:
        save_file({"left": left.contiguous()}, str(tmp), metadata=meta)
