"""Property: whatever is done to a valid checkpoint or result file (bit flips, truncation,
overwritten bytes, header and config edits), every command either succeeds or fails with
spectra's own error (exit 1, one line starting ``spectra: error:``), never with an internal
error (exit 4), an unexpected exception, a changed input, or a hang.

Bounded for CI: examples per container type from ``SPECTRA_FUZZ_EXAMPLES`` (default 60; a
third of that for result files, whose successful examples draw figures), derandomized (the
same examples every run), no example database written, a per-example deadline, and a test
timeout. Set ``SPECTRA_FUZZ_EXAMPLES=2000`` for a long local run.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spectra.errors import SpectraError
from spectra.io.result_schema import check_result
from tests.security.hostile import LORA_CONFIG, command_args, safetensors_parts

EXAMPLES = int(os.environ.get("SPECTRA_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=20),  # a few ms each; a hang or a pathological case stands out
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FAST = ("compare", "inspect", "diagnose")  # run on every example
DRAWING = ("figures", "report")  # ~1 s each when they succeed: bounded per test
MAX_DRAWN = 1  # per test: a successful draw costs ~1-3 s

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def _check(res: Any, command: str) -> None:
    """Success, or spectra's own one-line error; never exit 4 or a traceback."""
    assert "Traceback" not in res.err, (command, res.err)
    if res.code == 0:
        return
    errors = [ln for ln in res.err.splitlines() if ln.startswith("spectra:")]
    assert res.code == 1, (command, res.code, res.err)
    assert len(errors) == 1 and errors[0].startswith("spectra: error: "), (command, res.err)


class _Runner:
    """Runs every command on one mutated input; the drawing commands on every input that
    fails (it fails before drawing: cheap) and on the first MAX_DRAWN that succeed (the count
    is kept in ``out``, which lives as long as the test, across examples)."""

    def __init__(self, run_cli: Any, base: Path, out: Path):
        self.run_cli, self.base, self.out = run_cli, base, out
        out.mkdir(exist_ok=True)
        self.counter = out / "drawn.count"

    def all_commands(self, ckpt: Path, watch: tuple[Path, ...] = ()) -> None:
        failed = False
        watch = (ckpt, *watch)
        for command in FAST:
            res = self.run_cli(*command_args(command, self.base, ckpt, self.out), inputs=watch)
            _check(res, command)
            failed |= command == "compare" and res.code != 0
        drawn = int(self.counter.read_text()) if self.counter.exists() else 0
        if failed or drawn < MAX_DRAWN:
            self.counter.write_text(str(drawn + (not failed)))
            for command in DRAWING:
                res = self.run_cli(*command_args(command, self.base, ckpt, self.out), inputs=watch)
                _check(res, command)


# --------------------------------------------------------------------------- byte mutations


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes, hot: int) -> bytes:
    """Bit flips (half of them in the first ``hot`` bytes: header or pickle), a truncation,
    or a run of overwritten bytes."""
    kind = draw(st.sampled_from(["flip", "truncate", "overwrite"]))
    out = bytearray(data)
    if kind == "truncate":
        return bytes(out[: draw(st.integers(0, len(out) - 1))])
    if kind == "overwrite":
        start = draw(st.integers(0, len(out) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        out[start : start + len(chunk)] = chunk
        return bytes(out)
    for _ in range(draw(st.integers(1, 8))):
        limit = hot if draw(st.booleans()) else len(out)
        pos = draw(st.integers(0, max(0, min(limit, len(out)) - 1)))
        out[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(out)


@st.composite
def header_edit(draw: st.DrawFn, data: bytes) -> bytes:
    """A safetensors header with one field of one entry replaced, dropped, or the length
    prefix rewritten; the data section kept."""
    header, body = safetensors_parts(data)
    kind = draw(st.sampled_from(["field", "drop", "length", "metadata"]))
    if kind == "length":
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + data[8:]
    if kind == "metadata":
        header["__metadata__"] = draw(JSON_VALUES)
    else:
        key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        if kind == "drop":
            header[key].pop(field)
        else:
            header[key][field] = draw(
                JSON_VALUES
                | st.sampled_from(["F16", "BF16", "F64", "I8", "U8", "BOOL", "F8_E4M3", "C64"])
                | st.lists(st.integers(-3, 400), max_size=4)
            )
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _header_size(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


# --------------------------------------------------------------------------- the properties


@pytest.mark.timeout(240)
@FUZZ
@given(data=st.data())
def test_mutated_safetensors(ckpts, run_cli, tmp_path, data) -> None:
    """The tuned checkpoint, a MultiLoRA file or the base is mutated (the others stay valid)."""
    original = data.draw(st.sampled_from([ckpts.full, ckpts.multilora, ckpts.base]), label="file")
    raw = original.read_bytes()
    mutated = data.draw(byte_mutation(raw, _header_size(raw)) | header_edit(raw), label="mutation")
    target = tmp_path / original.name
    target.write_bytes(mutated)
    if original == ckpts.base:
        _Runner(run_cli, target, tmp_path / "out").all_commands(ckpts.full, watch=(target,))
    else:
        _Runner(run_cli, ckpts.base, tmp_path / "out").all_commands(target)


@pytest.mark.timeout(240)
@FUZZ
@given(data=st.data())
def test_mutated_torch_files(ckpts, run_cli, tmp_path, data) -> None:
    import torch
    from safetensors.torch import load_file

    legacy = tmp_path / "legacy.pt"
    if not legacy.exists():
        torch.save(load_file(ckpts.full), legacy, _use_new_zipfile_serialization=False)
    original = data.draw(st.sampled_from([ckpts.full_pt, legacy]), label="file")
    raw = original.read_bytes()
    mutated = data.draw(byte_mutation(raw, _pickle_end(raw)), label="mutation")
    target = tmp_path / f"mutated{original.suffix}"
    target.write_bytes(mutated)
    _Runner(run_cli, ckpts.base, tmp_path / "out").all_commands(target)


def _pickle_end(raw: bytes) -> int:
    """Where the pickle ends: the data.pkl record of a zip file, ~1 KB of a legacy file."""
    if raw[:2] != b"PK":
        return 1024
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
        return info.header_offset + 30 + len(info.filename) + info.compress_size


PEFT_FIELDS = sorted(
    {*LORA_CONFIG, "rank_pattern", "alpha_pattern", "use_rslora", "fan_in_fan_out", "use_dora",
     "init_lora_weights", "modules_to_save", "layers_to_transform", "bias"}
)  # fmt: skip


@st.composite
def peft_edit(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(LORA_CONFIG)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(PEFT_FIELDS) | st.text(max_size=8))
        if draw(st.booleans()) and name in config:
            del config[name]
        else:
            config[name] = draw(
                JSON_VALUES
                | st.dictionaries(
                    st.sampled_from(["q", "v", "layers.0.q", ".*", "(", "x"]),
                    JSON_VALUES,
                    max_size=2,
                )
            )
    return config


@pytest.mark.timeout(240)
@FUZZ
@given(data=st.data())
def test_mutated_peft_adapters(ckpts, run_cli, tmp_path, data) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    weights = (ckpts.lora / "adapter_model.safetensors").read_bytes()
    config = (ckpts.lora / "adapter_config.json").read_text()
    what = data.draw(st.sampled_from(["config", "weights", "both"]), label="what")
    if what in ("config", "both"):
        config = json.dumps(data.draw(peft_edit(), label="config"))
    if what in ("weights", "both"):
        weights = data.draw(
            byte_mutation(weights, _header_size(weights)) | header_edit(weights), label="weights"
        )
    (adapter / "adapter_config.json").write_text(config)
    (adapter / "adapter_model.safetensors").write_bytes(weights)
    _Runner(run_cli, ckpts.base, tmp_path / "out").all_commands(adapter)


@st.composite
def result_edit(draw: st.DrawFn, result: dict[str, Any]) -> dict[str, Any]:
    """One to three fields anywhere in the result replaced by any JSON value, or dropped."""
    result = copy.deepcopy(result)
    for _ in range(draw(st.integers(1, 3))):
        node: Any = result
        path: list[Any] = []
        while isinstance(node, dict | list) and node and (not path or draw(st.booleans())):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = result
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return result


@pytest.mark.timeout(240)
@settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
@given(data=st.data())
def test_mutated_results_from_json(ckpts, run_cli, tmp_path, data) -> None:
    good = tmp_path / "good.json"
    if not good.exists():
        res = run_cli("compare", ckpts.base, ckpts.lora, ckpts.multilora, "-q", "--json", good)
        assert res.code == 0, res.err
    result = data.draw(result_edit(json.loads(good.read_text())), label="result")
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(result))
    try:
        check_result(result, path)
        valid = True
    except SpectraError:
        valid = False
    counter = tmp_path / "drawn"
    drawn = int(counter.read_text()) if counter.exists() else 0
    for command in DRAWING if not valid or drawn < MAX_DRAWN else ():
        extra = ["--format", "png"] if command == "figures" else ["-q"]
        res = run_cli(command, "--from-json", path, "-o", tmp_path / "out", *extra, inputs=(path,))
        _check(res, command)
        assert res.code == (0 if valid else 1), (command, res.err)
    counter.write_text(str(drawn + valid))
