"""Builders of hostile and broken inputs, and the one CLI contract every test checks.

The checkpoints are tiny on purpose (8 × 6 matrices): every command runs in a few
milliseconds, so each broken file can go through every command that reads checkpoints.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.files import tree_hash  # noqa: F401  (re-exported)

OUT, IN, R = 8, 6, 2  # every adapted matrix is OUT × IN; LoRA rank R
MODULES = tuple(f"layers.{i}.{t}" for i in range(2) for t in ("q", "v"))
COMMANDS = ("compare", "inspect", "figures", "report", "diagnose")
EXIT_BAD_INPUT = 1


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Ckpts:
    """Valid tiny checkpoints: the base, a full fine-tune, a PEFT LoRA adapter (safetensors
    and .bin), a MultiLoRA file, and the full fine-tune as a torch file."""

    root: Path
    base: Path
    full: Path
    full_pt: Path
    lora: Path
    lora_bin: Path
    multilora: Path


def base_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """W0 of every module (OUT, IN) plus one 1-D norm weight (skipped by spectra)."""
    g = torch.Generator().manual_seed(seed)
    sd = {f"{m}.weight": torch.randn(OUT, IN, generator=g) for m in MODULES}
    sd["layers.0.norm.weight"] = torch.ones(OUT)
    return sd


def lora_state(seed: int = 2) -> dict[str, torch.Tensor]:
    """PEFT keys: A (R, IN), B (OUT, R) per module, ``base_model.model.`` prefix."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for m in MODULES:
        sd[f"base_model.model.{m}.lora_A.weight"] = torch.randn(R, IN, generator=g)
        sd[f"base_model.model.{m}.lora_B.weight"] = torch.randn(OUT, R, generator=g)
    return sd


LORA_CONFIG: dict[str, Any] = {
    "peft_type": "LORA",
    "r": R,
    "lora_alpha": 2 * R,
    "target_modules": ["q", "v"],
}


def write_adapter(
    folder: Path,
    tensors: dict[str, Any] | None = None,
    config: dict[str, Any] | str | None = None,
    *,
    bin_file: bool = False,
) -> Path:
    """A PEFT adapter directory; ``config`` as a dict, or raw text for broken JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = (
        config if isinstance(config, str) else json.dumps(LORA_CONFIG if config is None else config)
    )
    (folder / "adapter_config.json").write_text(raw)
    tensors = lora_state() if tensors is None else tensors
    if bin_file:
        torch.save(tensors, folder / "adapter_model.bin")
    else:
        save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def multilora_tensors(n: int = 3, r: int = R, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {}
    for m in MODULES:
        t[m + ".multilora_A"] = torch.randn(n, r, IN, generator=g)
        t[m + ".multilora_B"] = torch.randn(n, OUT, r, generator=g)
        t[m + ".multilora_scaling"] = torch.randn(n, OUT, generator=g)
    return t


def make_ckpts(root: Path) -> Ckpts:
    from spectra.multilora.format import MultiLoRAFileConfig, write_multilora

    base = base_state()
    save_file(base, root / "base.safetensors")
    g = torch.Generator().manual_seed(1)
    full = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    save_file(full, root / "full.safetensors")
    torch.save(full, root / "full.pt")
    write_adapter(root / "lora")
    write_adapter(root / "lora_bin", bin_file=True)
    write_multilora(
        root / "multilora.safetensors",
        multilora_tensors(),
        MultiLoRAFileConfig(r=R, n=3, lora_alpha=4.0),
    )
    return Ckpts(
        root,
        root / "base.safetensors",
        root / "full.safetensors",
        root / "full.pt",
        root / "lora",
        root / "lora_bin",
        root / "multilora.safetensors",
    )


# --------------------------------------------------------------------------- byte surgery


def safetensors_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header dict, data section) of safetensors bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def safetensors_bytes(header: dict[str, Any], body: bytes) -> bytes:
    """Header (padded to 8 bytes, as the format asks) + body, without any validation."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def edit_header(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    header, body = safetensors_parts(data)
    edit(header)
    return safetensors_bytes(header, body)


# --------------------------------------------------------------------------- pickle payloads


class ShellPayload:
    """Unpickling runs ``touch marker`` through the shell (the classic pickle RCE)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


class ExecPayload:
    """Unpickling runs Python code (``exec``) that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def hand_pickle(marker: Path) -> bytes:
    """A pickle assembled opcode by opcode: ``{"w": os.system("touch <marker>")}``.

    PROTO 2, EMPTY_DICT, key, GLOBAL os.system, the command, TUPLE1, REDUCE, SETITEM, STOP.
    """
    cmd = f"touch '{marker}'".encode()
    key = b"w"
    return (
        b"\x80\x02}"
        + b"X" + struct.pack("<I", len(key)) + key
        + b"cos\nsystem\n"
        + b"X" + struct.pack("<I", len(cmd)) + cmd
        + b"\x85R"  # TUPLE1, REDUCE
        + b"s."  # SETITEM, STOP
    )  # fmt: skip


def torch_zip_with_data_pkl(template: Path, data_pkl: bytes, dest: Path) -> Path:
    """A copy of a real ``torch.save`` zip (version, byteorder, storages kept) whose
    ``data.pkl`` record is replaced by ``data_pkl``: the layout torch expects, a crafted pickle."""
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                body = data_pkl
            out.writestr(info, body)
    return dest


def nested(payload: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The payload hidden three containers deep beside real tensors:
    ``{"state_dict": {...tensors, "extra": [1, {"opts": OrderedDict(p=payload)}]}}``."""
    from collections import OrderedDict

    return {"state_dict": {**tensors, "extra": [1, {"opts": OrderedDict(p=payload)}]}}


def pickle_is_live(payload: Any, marker: Path) -> bool:
    """Positive control: plain ``pickle.loads`` of the payload does create the marker."""
    pickle.loads(pickle.dumps(payload))  # noqa: S301 - the point: this one runs the payload
    alive = marker.exists()
    marker.unlink(missing_ok=True)
    return alive


# --------------------------------------------------------------------------- the CLI contract


def command_args(command: str, base: Path, ckpt: Path, out: Path) -> list[str]:
    """The argument list of ``command`` reading ``ckpt`` against ``base``; outputs in ``out``."""
    base_s, ckpt_s = str(base), str(ckpt)
    return {
        "compare": ["compare", base_s, ckpt_s, "-q", "--json", str(out / "r.json")],
        "inspect": ["inspect", ckpt_s, "--base", base_s],
        "figures": ["figures", base_s, ckpt_s, "-q", "-o", str(out / "figs"), "--format", "png"],
        "report": ["report", base_s, ckpt_s, "-q", "-o", str(out / "report")],
        "diagnose": ["diagnose", ckpt_s, "--base", base_s],
    }[command]


def assert_refused(res: Any, *needles: str) -> None:
    """Exit 1; stderr is exactly one line ``spectra: error: ...`` holding every needle; no
    traceback, nothing else on stderr."""
    lines = res.err.strip().splitlines()
    assert res.code == EXIT_BAD_INPUT, (res.code, res.err)
    assert len(lines) == 1, res.err
    assert lines[0].startswith("spectra: error: "), res.err
    assert "Traceback" not in res.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
