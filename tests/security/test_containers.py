"""Broken containers: every command refuses them with one message naming the file (and the key
or field when there is one), exit 1, no traceback, no output written, inputs unchanged."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectra.io import open_tensors
from tests.security.hostile import (
    COMMANDS,
    Ckpts,
    assert_refused,
    command_args,
    edit_header,
    safetensors_bytes,
    safetensors_parts,
)

KEY = "layers.0.q.weight"
# A case builds the broken input in a directory and returns (path given, needles of the message)
Case = Callable[[Path, Ckpts], tuple[Path, tuple[str, ...]]]


def _bytes_case(name: str, make: Callable[[bytes], bytes], *needles: str) -> Case:
    def case(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
        p = d / name
        p.write_bytes(make(ck.full.read_bytes()))
        return p, (str(p), *needles)

    return case


def _set(field: str, value: object) -> Callable[[bytes], bytes]:
    return lambda data: edit_header(data, lambda h: h[KEY].__setitem__(field, value))


def _header_length(n: int) -> Callable[[bytes], bytes]:
    return lambda data: struct.pack("<Q", n) + data[8:]


def _torch_bytes(d: Path, ck: Ckpts) -> bytes:
    buf = io.BytesIO()
    torch.save(load_file(ck.full), buf)
    return buf.getvalue()


def _zip_without(record: str) -> Case:
    def case(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
        p = d / f"no_{record.replace('/', '_')}.pt"
        with (
            zipfile.ZipFile(io.BytesIO(_torch_bytes(d, ck))) as src,
            zipfile.ZipFile(p, "w") as out,
        ):
            for info in src.infolist():
                if not info.filename.endswith(record):
                    out.writestr(info, src.read(info.filename))
        return p, (str(p), "corrupt")

    return case


def _truncated_torch(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    p = d / "truncated.pt"
    data = _torch_bytes(d, ck)
    p.write_bytes(data[: len(data) * 2 // 3])
    return p, (str(p), "corrupt")


def _sparse_torch(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    p = d / "sparse.pt"
    sd = load_file(ck.full)
    torch.save({**sd, KEY: sd[KEY].to_sparse()}, p)
    return p, (str(p), KEY, "sparse", "dense")


def _index(weight_map: object, name: str = "model.safetensors.index.json") -> Case:
    def case(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
        folder = d / "sharded"
        folder.mkdir()
        save_file(load_file(ck.full), folder / "model-00001-of-00002.safetensors")
        save_file(load_file(ck.full), d / "outside.safetensors")
        text = weight_map if isinstance(weight_map, str) else json.dumps({"weight_map": weight_map})
        (folder / name).write_text(text)
        return folder, (str(folder / name),)

    return case


def _full_keys(shard: str) -> dict[str, str]:
    return {k: shard for k in ("layers.0.q.weight", "layers.0.v.weight", "layers.1.q.weight")}


def _missing_shard(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    folder, needles = _index(
        {"layers.0.q.weight": "model-00001-of-00002.safetensors"}
        | {"layers.1.v.weight": "model-00002-of-00002.safetensors"}
    )(d, ck)
    return folder, (*needles, "model-00002-of-00002.safetensors", "layers.1.v.weight", "missing")


def _empty_dir(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    (d / "empty").mkdir()
    return d / "empty", (str(d / "empty"), "no weights found")


def _junk_dir(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    (d / "junk").mkdir()
    (d / "junk" / "notes.txt").write_text("not weights")
    (d / "junk" / "weights.npy").write_bytes(b"\x93NUMPY")
    return d / "junk", (str(d / "junk"), "no weights found", "model.safetensors")


def _fifo(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    p = d / "pipe.safetensors"
    os.mkfifo(p)  # opening it for reading would block forever: it must never be opened
    return p, (str(p), "not a regular file")


def _missing_path(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    return d / "nope.safetensors", (str(d / "nope.safetensors"), "no such file")


def _unknown_suffix(d: Path, ck: Ckpts) -> tuple[Path, tuple[str, ...]]:
    p = d / "weights.npz"
    p.write_bytes(ck.full.read_bytes())
    return p, (str(p), ".npz", ".safetensors")


def _unsupported_dtype(data: bytes) -> bytes:
    header, body = safetensors_parts(data)
    begin = header[KEY]["data_offsets"][0]
    header[KEY] = {"dtype": "F8_E8M0", "shape": [8, 6], "data_offsets": [begin, begin + 48]}
    return safetensors_bytes(header, body)  # unused bytes left: they only make it invalid


SAFETENSORS_CASES: dict[str, Case] = {
    "empty-file": _bytes_case("empty.safetensors", lambda b: b"", "empty"),
    "truncated-data": _bytes_case("trunc.safetensors", lambda b: b[: len(b) - 40], "truncated"),
    "truncated-header": _bytes_case("trunch.safetensors", lambda b: b[:20], "header"),
    "shorter-than-length": _bytes_case("tiny.safetensors", lambda b: b[:5], "header"),
    "length-beyond-file": _bytes_case(
        "len.safetensors", lambda b: _header_length(len(b) + 100)(b), "header"
    ),
    "header-claims-200MB": _bytes_case(
        "huge.safetensors", _header_length(200 * 1024 * 1024), "header too large"
    ),
    "header-length-2^64-1": _bytes_case("max.safetensors", _header_length(2**64 - 1), "header"),
    "header-not-json": _bytes_case(
        "notjson.safetensors",
        lambda b: struct.pack("<Q", 16) + b"{not: json,,,}  " + b[24:],
        "JSON",
    ),
    "header-binary": _bytes_case(
        "binary.safetensors", lambda b: b[:8] + bytes(range(256))[: len(b) - 8], "header"
    ),
    "offsets-outside-data": _bytes_case(
        "offsets.safetensors", _set("data_offsets", [0, 10**9]), "offset"
    ),
    "offsets-reversed": _bytes_case("rev.safetensors", _set("data_offsets", [192, 0]), "header"),
    "dtype-not-matching-bytes": _bytes_case("dtype.safetensors", _set("dtype", "F64"), "header"),
    "shape-not-matching-bytes": _bytes_case("shape.safetensors", _set("shape", [64, 64]), "header"),
    "negative-shape": _bytes_case("neg.safetensors", _set("shape", [-8, -6]), "header"),
    "unknown-dtype-name": _bytes_case("unk.safetensors", _set("dtype", "F128"), "header"),
    "dtype-spectra-does-not-read": _bytes_case("e8m0.safetensors", _unsupported_dtype, "header"),
    "metadata-not-strings": _bytes_case(
        "meta.safetensors",
        lambda b: edit_header(b, lambda h: h.__setitem__("__metadata__", {"format": 1})),
        "header",
    ),
}
TORCH_CASES: dict[str, Case] = {
    "torch-truncated-zip": _truncated_torch,
    "torch-garbage": _bytes_case("garbage.pt", lambda b: b"\xfe\xff" * 2048, "corrupt"),
    "torch-zip-without-data.pkl": _zip_without("data.pkl"),
    "torch-zip-without-storage": _zip_without("data/0"),
    "torch-sparse-tensor": _sparse_torch,
}
PATH_CASES: dict[str, Case] = {
    "missing-path": _missing_path,
    "empty-directory": _empty_dir,
    "unrecognised-directory": _junk_dir,
    "fifo-not-a-file": _fifo,
    "unknown-suffix": _unknown_suffix,
    "index-missing-shard": _missing_shard,
    "index-shard-outside-dir": _index(_full_keys("../outside.safetensors")),
    "index-shard-absolute": _index(_full_keys("/etc/passwd")),
    "index-names-itself": _index(_full_keys("model.safetensors.index.json")),
    "index-not-json": _index('{"weight_map": {"a": '),
    "index-nested-too-deep": _index("[" * 100_000 + "]" * 100_000),
    "index-weight-map-not-object": _index('{"weight_map": ["model.safetensors"]}'),
    "index-huge-integer": _index('{"weight_map": {}, "n": ' + "9" * 5000 + "}"),
}
CASES = SAFETENSORS_CASES | TORCH_CASES | PATH_CASES


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_refuses_a_broken_checkpoint(ckpts, run_cli, tmp_path, case) -> None:
    bad, needles = CASES[case](tmp_path / "in", ckpts) if _mk(tmp_path / "in") else ((), ())
    out = tmp_path / "out"
    for command in COMMANDS:
        res = run_cli(*command_args(command, ckpts.base, bad, out), inputs=(tmp_path / "in",))
        assert_refused(res, *needles)
    assert not out.exists() or not any(out.rglob("*")), "a failed command wrote output"


@pytest.mark.parametrize("case", ["truncated-data", "header-claims-200MB", "index-names-itself"])
def test_a_broken_base_is_refused_by_name(ckpts, run_cli, tmp_path, case) -> None:
    bad, needles = CASES[case](tmp_path / "in", ckpts) if _mk(tmp_path / "in") else ((), ())
    for args in (
        ["compare", bad, ckpts.lora, "-q"],
        ["inspect", ckpts.lora, "--base", bad],
        ["diagnose", ckpts.full, "--base", bad],
    ):
        assert_refused(run_cli(*args, inputs=(tmp_path / "in",)), *needles)


def test_unreadable_files_are_refused(ckpts, run_cli, tmp_path, monkeypatch) -> None:
    """chmod 000 does not stop root (these tests run as root), so the refusal is simulated:
    os.access says no and opening raises PermissionError, for these paths only."""
    import builtins

    locked = tmp_path / "locked"
    locked.mkdir()
    full = locked / "full.safetensors"
    full.write_bytes(ckpts.full.read_bytes())
    adapter = locked / "adapter"
    adapter.mkdir()
    for f in ckpts.lora.iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    result = locked / "r.json"
    assert run_cli("compare", ckpts.base, ckpts.lora, "-q", "--json", result).code == 0
    denied = {str(full), str(adapter / "adapter_config.json"), str(result)}
    real_open, real_access = builtins.open, os.access

    def fake_open(file, *args, **kwargs):
        if str(file) in denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: str(p) not in denied and real_access(p, mode, **kw)
    )
    for command in COMMANDS:
        assert_refused(run_cli(*command_args(command, ckpts.base, full, tmp_path)), str(full))
        res = run_cli(*command_args(command, ckpts.base, adapter, tmp_path))
        assert_refused(res, "adapter_config.json", "readable")
    for command in ("figures", "report"):
        res = run_cli(command, "--from-json", result, "-o", tmp_path / "o")
        assert_refused(res, str(result), "readable")


def test_deeply_nested_torch_state_dict_is_flattened_without_recursion(tmp_path) -> None:
    """3000 nested dicts (beyond Python's recursion limit): the tensor is found, no
    RecursionError."""
    import sys

    depth = 3000
    obj: dict = {}
    node = obj
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    node["w"] = torch.ones(2, 2)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(4 * depth)  # torch.save pickles recursively
    try:
        torch.save(obj, tmp_path / "deep.pt")
    finally:
        sys.setrecursionlimit(limit)
    src = open_tensors(tmp_path / "deep.pt")
    assert src.keys() == [".".join(["a"] * depth + ["w"])]


def _mk(d: Path) -> bool:
    d.mkdir()
    return True


def test_names_from_files_cannot_drive_the_terminal(ckpts, run_cli, tmp_path) -> None:
    """A key holding ESC, a newline and a bidi override: the error stays one line and shows
    them escaped; so do the tables on stdout."""
    evil = "layers.0.q\x1b[2J\nFAKE: ok\u202e"
    base, tuned = load_file(ckpts.base), load_file(ckpts.full)
    base[f"{evil}.weight"] = torch.randn(8, 6)
    tuned[f"{evil}.weight"] = torch.randn(8, 5)
    save_file(base, tmp_path / "b.safetensors")
    save_file(tuned, tmp_path / "t.safetensors")
    res = run_cli("compare", tmp_path / "b.safetensors", tmp_path / "t.safetensors", "-q")
    assert_refused(res, "layers.0.q\\x1b[2J\\nFAKE: ok\\u202e")
    assert "\x1b" not in res.err and "\u202e" not in res.err
    tuned[f"{evil}.weight"] = torch.randn(8, 6)
    save_file(tuned, tmp_path / "t.safetensors")
    res = run_cli("inspect", tmp_path / "t.safetensors", "--base", tmp_path / "b.safetensors")
    assert res.code == 0 and "\\x1b[2J" in res.out
    assert "\x1b" not in res.out and "\u202e" not in res.out
