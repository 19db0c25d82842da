"""detect_kind and open_checkpoint: each kind from real files, each refusal with its reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch import nn

from spectra.errors import (
    AdapterConfigError,
    AmbiguousInputError,
    FileFormatError,
    UnsupportedFormatError,
)
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, detect_kind, open_checkpoint
from spectra.loaders.full import FullReader
from spectra.loaders.multilora import MultiLoRAReader
from spectra.loaders.peft import PeftLoraReader
from spectra.multilora.format import MultiLoRAFileConfig, write_multilora
from tests.models import Linears, tiny_bert


def _toy() -> nn.Module:
    return Linears(lin1=(6, 5), lin2=(5, 4))


def _save_peft(config: object, out: Path) -> Path:
    get_peft_model(_toy(), config).save_pretrained(str(out))  # type: ignore[arg-type]
    return out


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    return _save_peft(LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"]), tmp_path / "lora")


def _multilora(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    t = {
        "lin1.multilora_A": torch.randn(2, 1, 6, generator=g),
        "lin1.multilora_B": torch.randn(2, 5, 1, generator=g),
        "lin1.multilora_scaling": torch.randn(2, 5, generator=g),
    }
    return write_multilora(path, t, MultiLoRAFileConfig(r=1, n=2, lora_alpha=2.0))


# --- each kind ----------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["", "adapter_model.safetensors", "adapter_config.json"])
def test_peft_lora(lora_dir: Path, given: str) -> None:
    assert detect_kind(lora_dir / given if given else lora_dir) == "lora"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_multilora(tmp_path: Path, suffix: str) -> None:
    assert detect_kind(_multilora(tmp_path / f"m{suffix}")) == "multilora"


def test_full_file_and_hf_dir(tmp_path: Path) -> None:
    save_file(
        {k: v.contiguous() for k, v in _toy().state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    assert detect_kind(tmp_path / "w.safetensors") == "full"
    torch.save(_toy().state_dict(), tmp_path / "w.pt")
    assert detect_kind(tmp_path / "w.pt") == "full"
    hf = tiny_bert(vocab_size=30, hidden_size=8, num_hidden_layers=1, intermediate_size=8)
    hf.save_pretrained(str(tmp_path / "hf"))
    assert detect_kind(tmp_path / "hf") == "full"


# --- refusals -----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="no such file"):
        detect_kind(tmp_path / "nope")


def test_unknown_dir(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hello")
    with pytest.raises(FileFormatError, match="spectra reads: a PEFT LoRA adapter"):
        detect_kind(tmp_path / "d")


def test_no_matrices(tmp_path: Path) -> None:
    save_file({"bias": torch.zeros(3), "scale": torch.ones(4)}, str(tmp_path / "v.safetensors"))
    with pytest.raises(FileFormatError, match="no 2-D weight matrix"):
        detect_kind(tmp_path / "v.safetensors")


def test_multilora_without_metadata(tmp_path: Path) -> None:
    t = {"lin1.multilora_A": torch.zeros(2, 1, 6), "lin1.multilora_B": torch.zeros(2, 5, 1)}
    save_file(t, str(tmp_path / "m.safetensors"))
    with pytest.raises(AdapterConfigError, match="metadata") as e:
        detect_kind(tmp_path / "m.safetensors")
    assert e.value.key == "lin1.multilora_A"


def test_lora_weights_without_config(lora_dir: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(lora_dir / "adapter_model.safetensors", alone / "adapter_model.safetensors")
    assert detect_kind(alone / "adapter_model.safetensors") == "lora"  # a plain LoRA state dict
    with pytest.raises(AmbiguousInputError, match="--lora-alpha ALPHA.*--lora-scale S"):
        open_checkpoint(alone / "adapter_model.safetensors")


def test_config_without_weights(lora_dir: Path) -> None:
    (lora_dir / "adapter_model.safetensors").unlink()
    with pytest.raises(
        FileFormatError, match="neither adapter_model.safetensors nor adapter_model.bin"
    ):
        detect_kind(lora_dir)


def test_dora_detected(tmp_path: Path) -> None:
    path = _save_peft(
        LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"], use_dora=True), tmp_path / "a"
    )
    assert detect_kind(path) == "dora"
    with pytest.raises(UnsupportedFormatError, match="--kind lora was forced.*'dora'"):
        open_checkpoint(path, options=LoadOptions(kind="lora"))


def test_other_peft_type_refused(tmp_path: Path) -> None:
    path = _save_peft(IA3Config(target_modules=["lin1"], feedforward_modules=[]), tmp_path / "ia3")
    with pytest.raises(UnsupportedFormatError, match="'IA3'") as e:
        detect_kind(path)
    assert e.value.key == "peft_type"


def test_pissa_refused(tmp_path: Path) -> None:
    """A real PiSSA adapter: PEFT rewrote the base at init, so the files cannot give ΔW."""
    path = _save_peft(
        LoraConfig(r=2, lora_alpha=2, target_modules=["lin1"], init_lora_weights="pissa"),
        tmp_path / "p",
    )
    with pytest.raises(UnsupportedFormatError, match="changes the base weight") as e:
        detect_kind(path)
    assert e.value.key == "init_lora_weights"
    with pytest.raises(UnsupportedFormatError):  # a forced kind is refused the same way
        open_checkpoint(path, options=LoadOptions(kind="lora"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("init_lora_weights", "pissa_niter_4"),
        ("init_lora_weights", "olora"),
        ("init_lora_weights", "corda"),
        ("init_lora_weights", "loftq"),
        ("init_lora_weights", "lora_ga"),
        ("use_qalora", True),
        ("target_parameters", ["experts.gate_up_proj"]),
    ],
)
def test_config_refusals(lora_dir: Path, field: str, value: object) -> None:
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    cfg[field] = value
    (lora_dir / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedFormatError) as e:
        detect_kind(lora_dir)
    assert e.value.key == field


@pytest.mark.parametrize("init", [True, False, "gaussian", "eva", "orthogonal"])
def test_base_preserving_inits_accepted(lora_dir: Path, init: object) -> None:
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    cfg["init_lora_weights"] = init
    (lora_dir / "adapter_config.json").write_text(json.dumps(cfg))
    assert detect_kind(lora_dir) == "lora"


def test_config_not_json(lora_dir: Path) -> None:
    (lora_dir / "adapter_config.json").write_text("{broken")
    with pytest.raises(FileFormatError, match="JSON"):
        detect_kind(lora_dir)


# --- open_checkpoint dispatch -------------------------------------------------------------------


def test_open_checkpoint_dispatches(lora_dir: Path, tmp_path: Path) -> None:
    assert isinstance(open_checkpoint(lora_dir), PeftLoraReader)
    assert isinstance(open_checkpoint(_multilora(tmp_path / "m.safetensors")), MultiLoRAReader)
    sd = {k: v.contiguous() for k, v in _toy().state_dict().items()}
    save_file(sd, str(tmp_path / "base.safetensors"))
    save_file({k: v + 1 for k, v in sd.items()}, str(tmp_path / "tuned.safetensors"))
    reader = open_checkpoint(
        tmp_path / "tuned.safetensors", base=open_tensors(tmp_path / "base.safetensors")
    )
    assert isinstance(reader, FullReader) and reader.kind == "full"


def test_forced_kind_without_reader(lora_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spectra import loaders

    monkeypatch.delitem(loaders.READERS, "kohya")
    with pytest.raises(UnsupportedFormatError, match="'kohya' are not read yet"):
        open_checkpoint(lora_dir, options=LoadOptions(kind="kohya"))
