"""The W0 left-singular-vector cache: hits, corrupt or mismatched entries, unwritable folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.engine.against_base import base_left_vectors
from spectra.engine.cache import (
    CACHE_FORMAT_VERSION,
    CACHE_MIN_SIDE,
    LeftVectorCache,
    _checksum,
    cache_dir,
    content_key,
)

N = CACHE_MIN_SIDE  # the smallest side that is cached


class Counting:
    """compute() for LeftVectorCache: W0's left vectors, counting the calls."""

    def __init__(self, w0: torch.Tensor) -> None:
        self.w0, self.calls = w0, 0

    def __call__(self) -> torch.Tensor | None:
        self.calls += 1
        return base_left_vectors(self.w0, self.w0.dtype)


def _w0(seed: int = 0, shape: tuple[int, int] = (N + 8, N)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _entry(root: Path) -> Path:
    (entry,) = (root / "w0-left").glob("*.safetensors")
    return entry


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SPECTRA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "spectra"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "spectra"


def test_hit_returns_the_stored_vectors(tmp_path):
    w0 = _w0()
    cache, compute = LeftVectorCache(tmp_path), Counting(w0)
    first = cache.left_vectors(w0, "cpu", compute)
    second = cache.left_vectors(w0.clone(), "cpu", compute)  # same content, another tensor
    assert compute.calls == 1 and first is not None and second is not None
    assert torch.equal(first, second) and second.shape == (N + 8, N)
    assert _entry(tmp_path).name == content_key(w0, "cpu") + ".safetensors"


def test_key_changes_with_content_dtype_shape_and_device():
    w0 = _w0()
    edited = w0.clone()
    edited[3, 7] += 1e-6
    keys = {
        content_key(w0, "cpu"),
        content_key(edited, "cpu"),
        content_key(w0.double(), "cpu"),
        content_key(w0.reshape(N, N + 8), "cpu"),
        content_key(w0, "cuda"),
    }
    assert len(keys) == 5


def _assert_recomputed(tmp_path: Path, w0: torch.Tensor) -> None:
    compute = Counting(w0)
    got = LeftVectorCache(tmp_path).left_vectors(w0, "cpu", compute)
    assert compute.calls == 1  # the entry was not trusted
    assert got is not None
    assert torch.equal(got, base_left_vectors(w0, w0.dtype))
    # ... and it was replaced by a good one
    again = Counting(w0)
    LeftVectorCache(tmp_path).left_vectors(w0, "cpu", again)
    assert again.calls == 0


def test_truncated_entry_is_recomputed(tmp_path):
    w0 = _w0()
    LeftVectorCache(tmp_path).left_vectors(w0, "cpu", Counting(w0))
    entry = _entry(tmp_path)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    _assert_recomputed(tmp_path, w0)


def test_flipped_bytes_are_recomputed(tmp_path):
    w0 = _w0()
    LeftVectorCache(tmp_path).left_vectors(w0, "cpu", Counting(w0))
    entry = _entry(tmp_path)
    data = bytearray(entry.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data: the checksum no longer matches
    entry.write_bytes(bytes(data))
    _assert_recomputed(tmp_path, w0)


@pytest.mark.parametrize("what", ["not orthonormal", "wrong key", "old format", "wrong shape"])
def test_wellformed_but_wrong_entry_is_recomputed(tmp_path, what):
    w0 = _w0()
    key = content_key(w0, "cpu")
    good = base_left_vectors(w0, w0.dtype)
    assert good is not None
    left = {"not orthonormal": 2 * good, "wrong shape": good[:, :-1]}.get(what, good)
    meta = {
        "format": "0" if what == "old format" else CACHE_FORMAT_VERSION,
        "key": "0" * 40 if what == "wrong key" else key,
        "checksum": _checksum(left.contiguous()),  # a consistent checksum: other checks catch it
    }
    (tmp_path / "w0-left").mkdir()
    save_file({"left": left.contiguous()}, str(tmp_path / "w0-left" / f"{key}.safetensors"), meta)
    _assert_recomputed(tmp_path, w0)


def test_unwritable_cache_dir_only_costs_the_recomputation(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    w0 = _w0()
    cache, compute = LeftVectorCache(blocker / "cache"), Counting(w0)
    first = cache.left_vectors(w0, "cpu", compute)
    second = cache.left_vectors(w0, "cpu", compute)
    assert compute.calls == 2 and first is not None and torch.equal(first, second)
    assert blocker.read_text() == "not a folder"


def test_disabled_or_small_never_touches_the_disk(tmp_path):
    w0 = _w0()
    compute = Counting(w0)
    LeftVectorCache(None).left_vectors(w0, "cpu", compute)
    small = _w0(shape=(N - 1, N - 1))
    LeftVectorCache(tmp_path).left_vectors(small, "cpu", Counting(small))
    assert compute.calls == 1 and not any(tmp_path.iterdir())
