"""Pickle-based files: no code in them ever runs, through any command, however it is hidden.

Each payload would create a marker file when unpickled (a positive control proves it does
under plain ``pickle``). Every command must refuse the file with one message that says why
(code execution) and how to convert to safetensors, exit 1, and the marker must never appear.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.security.hostile import (
    COMMANDS,
    ExecPayload,
    ShellPayload,
    assert_refused,
    command_args,
    hand_pickle,
    lora_state,
    nested,
    pickle_is_live,
    torch_zip_with_data_pkl,
    write_adapter,
)

PAYLOADS = {"shell": ShellPayload, "exec": ExecPayload}


def _zip_top(d: Path, full: dict, marker: Path, payload: type) -> Path:
    torch.save({**full, "evil": payload(marker)}, d / "top.pt")
    return d / "top.pt"


def _zip_nested(d: Path, full: dict, marker: Path, payload: type) -> Path:
    torch.save(nested(payload(marker), full), d / "nested.pth")
    return d / "nested.pth"


def _legacy(d: Path, full: dict, marker: Path, payload: type) -> Path:
    p = d / "legacy.pt"
    torch.save(nested(payload(marker), full), p, _use_new_zipfile_serialization=False)
    assert p.read_bytes()[:2] != b"PK"  # really the old (non-zip) format
    return p


def _raw_pickle(d: Path, full: dict, marker: Path, payload: type) -> Path:
    p = d / "raw.ckpt"
    p.write_bytes(pickle.dumps({"model": {"x": payload(marker)}}, protocol=4))
    return p


def _hand_zip(d: Path, full: dict, marker: Path, payload: type) -> Path:
    template = d / "template.pt"
    torch.save(full, template)
    return torch_zip_with_data_pkl(template, hand_pickle(marker), d / "crafted.pt")


def _sharded_bin(d: Path, full: dict, marker: Path, payload: type) -> Path:
    """pytorch_model.bin.index.json whose second shard carries the payload."""
    folder = d / "sharded"
    folder.mkdir()
    keys = sorted(full)
    first, second = keys[: len(keys) // 2], keys[len(keys) // 2 :]
    torch.save({k: full[k] for k in first}, folder / "pytorch_model-00001-of-00002.bin")
    shard2 = nested(payload(marker), {k: full[k] for k in second})
    torch.save(shard2, folder / "pytorch_model-00002-of-00002.bin")
    weight_map = {k: "pytorch_model-00001-of-00002.bin" for k in first}
    weight_map |= {k: "pytorch_model-00002-of-00002.bin" for k in second}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def _adapter_bin(d: Path, full: dict, marker: Path, payload: type) -> Path:
    return write_adapter(d / "adapter", nested(payload(marker), lora_state()), bin_file=True)


BUILDERS = {
    "zip-top-level": _zip_top,
    "zip-nested": _zip_nested,
    "legacy-non-zip": _legacy,
    "raw-pickle": _raw_pickle,
    "hand-built-zip": _hand_zip,
    "sharded-bin-shard": _sharded_bin,
    "adapter_model.bin": _adapter_bin,
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_payloads_are_live_under_plain_pickle(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "MARKER"
    assert pickle_is_live(PAYLOADS[payload](marker), marker)


def test_hand_assembled_pickle_is_live_under_plain_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    assert pickle.loads(hand_pickle(marker)) == {"w": 0}  # noqa: S301 - positive control
    assert marker.exists()


@pytest.mark.parametrize("where", sorted(BUILDERS))
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_no_command_runs_the_payload(ckpts, run_cli, tmp_path, where, payload) -> None:
    marker = tmp_path / "MARKER"
    evil = BUILDERS[where](tmp_path, load_file(ckpts.full), marker, PAYLOADS[payload])
    for command in COMMANDS:
        res = run_cli(*command_args(command, ckpts.base, evil, tmp_path), inputs=(evil,))
        assert_refused(res, "code execution", "safetensors", "torch.load")
        assert str(evil.name) in res.err or "pytorch_model-00002" in res.err
        assert not marker.exists(), f"{command} ran the payload of {where}"
    assert not (tmp_path / "figs").exists() and not (tmp_path / "report").exists()


def test_payload_in_the_base_is_refused_too(ckpts, run_cli, tmp_path) -> None:
    marker = tmp_path / "MARKER"
    evil = _zip_nested(tmp_path, load_file(ckpts.base), marker, ShellPayload)
    res = run_cli("compare", evil, ckpts.full, "-q", inputs=(evil,))
    assert_refused(res, str(evil), "code execution")
    assert not marker.exists()


def test_environment_cannot_turn_weights_only_off(ckpts, run_cli, tmp_path, monkeypatch) -> None:
    """torch honours TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only when weights_only is not passed;
    spectra always passes it."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "MARKER"
    evil = _zip_top(tmp_path, load_file(ckpts.full), marker, ExecPayload)
    res = run_cli("inspect", evil, "--base", ckpts.base, inputs=(evil,))
    assert_refused(res, "code execution")
    assert not marker.exists()


def test_a_clean_torch_file_still_loads(ckpts, run_cli, tmp_path) -> None:
    """Control: the refusals above are about the payload, not about torch files."""
    res = run_cli(*command_args("compare", ckpts.base, ckpts.full_pt, tmp_path))
    assert res.code == 0, res.err
    res = run_cli(*command_args("inspect", ckpts.base, ckpts.lora_bin, tmp_path))
    assert res.code == 0, res.err
