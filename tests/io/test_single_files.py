"""open_tensors on single files: safetensors and torch pickles, written by the real libraries."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import FileFormatError, SpectraError, UnsafeFileError
from spectra.io import MissingTensorError, open_tensors


def _tensors() -> dict[str, torch.Tensor]:
    return {
        "layer.1.weight": torch.randn(3, 5),
        "layer.0.weight": torch.randn(4, 3).bfloat16(),
        "layer.0.bias": torch.randn(4).half(),
        "ids": torch.arange(6),
    }


def test_safetensors_keys_shapes_dtypes_values(tmp_path: Path) -> None:
    tensors = _tensors()
    f = tmp_path / "m.safetensors"
    save_file(tensors, f, metadata={"format": "pt", "note": "x"})
    src = open_tensors(f)
    assert src.keys() == sorted(tensors)
    assert src.metadata == {"format": "pt", "note": "x"}
    for k, t in tensors.items():
        assert k in src
        assert src.shape(k) == tuple(t.shape)
        assert src.dtype(k) == t.dtype
        got = src.get(k)
        assert got.dtype == t.dtype  # bf16 stays bf16: widening is the loader's job
        assert torch.equal(got, t)
    assert "nope" not in src


def test_torch_file_nested_state_dict_ddp_prefix_and_metadata(tmp_path: Path) -> None:
    a, b, c = torch.randn(2, 3), torch.randn(3), torch.randn(1, 2)
    ckpt = {
        "epoch": 7,
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}},
        "__metadata__": {"format": "demo"},
        "state_dict": {
            "model": {"module.enc.weight": a, "module.enc.bias": b, "module.head": {"w": c}}
        },
    }
    f = tmp_path / "ckpt.pt"
    torch.save(ckpt, f)
    src = open_tensors(f)
    assert src.keys() == ["enc.bias", "enc.weight", "head.w"]
    assert src.metadata == {"format": "demo"}
    assert torch.equal(src.get("enc.weight"), a)
    assert torch.equal(src.get("head.w"), c)
    assert src.shape("enc.bias") == (3,)
    desc = src.description  # type: ignore[attr-defined]
    assert "'state_dict'.'model'" in desc and "optimizer" in desc and "module." in desc


def test_torch_file_prefix_kept_unless_every_key_has_it(tmp_path: Path) -> None:
    f = tmp_path / "m.pth"
    torch.save({"module.a": torch.ones(1), "b": torch.ones(1), "step": 3, "name": "x"}, f)
    assert open_tensors(f).keys() == ["b", "module.a"]


def test_old_non_zip_torch_file_loads_without_mmap(tmp_path: Path) -> None:
    t = torch.randn(3, 2, dtype=torch.float64)
    f = tmp_path / "old.bin"
    torch.save({"model": {"w": t}}, f, _use_new_zipfile_serialization=False)
    src = open_tensors(f)
    assert src.keys() == ["w"]
    assert torch.equal(src.get("w"), t)


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_with_code_is_refused_and_not_run(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "MARKER"
    f = tmp_path / "evil.pt"
    torch.save(
        {"w": torch.ones(2), "x": _Payload(marker)}, f, _use_new_zipfile_serialization=zip_format
    )
    assert not marker.exists()
    with pytest.raises(UnsafeFileError) as err:
        open_tensors(f)
    assert not marker.exists()
    msg = str(err.value)
    assert str(f) in msg and "code execution" in msg and "safetensors" in msg


def test_plain_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    f = tmp_path / "evil.ckpt"
    f.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    with pytest.raises(UnsafeFileError):
        open_tensors(f)
    assert not marker.exists()


def test_unknown_key_is_a_key_error_naming_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(1)}, f)
    src = open_tensors(f)
    with pytest.raises(MissingTensorError) as err:
        src.get("zz")
    assert isinstance(err.value, KeyError) and isinstance(err.value, SpectraError)
    assert "'zz'" in str(err.value) and str(f) in str(err.value)


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"a": torch.randn(8, 8), "b": torch.randn(4)})


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, make",
    [
        ("empty.safetensors", lambda: b""),
        ("trunc.safetensors", lambda: _safetensors_bytes()[:-17]),
        ("tiny.safetensors", lambda: _safetensors_bytes()[:5]),
        ("bighdr.safetensors", lambda: struct.pack("<Q", 10**6) + b'{"a":1}'),
        ("badjson.safetensors", lambda: struct.pack("<Q", 6) + b"{abc}!"),
        ("empty.pt", lambda: b""),
        ("garbage.pt", lambda: b"this is not a pickle at all"),
    ],
)
def test_bad_files_raise_file_format_error_naming_file(tmp_path: Path, name: str, make) -> None:
    f = _write(tmp_path / name, make())
    with pytest.raises(FileFormatError) as err:
        open_tensors(f)
    assert str(f) in str(err.value)


def test_truncated_zip_torch_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(64, 64)}, good)
    data = good.read_bytes()
    f = _write(tmp_path / "trunc.pt", data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="trunc.pt.*corrupt"):
        open_tensors(f)


def test_missing_path_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="no such file"):
        open_tensors(tmp_path / "absent.safetensors")
    f = _write(tmp_path / "weights.npz", b"PK")
    with pytest.raises(FileFormatError) as err:
        open_tensors(f)
    msg = str(err.value)
    assert "weights.npz" in msg and ".safetensors" in msg and ".ckpt" in msg


def test_non_dict_torch_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "t.pt"
    torch.save(torch.ones(3), f)
    with pytest.raises(FileFormatError, match="state_dict"):
        open_tensors(f)
