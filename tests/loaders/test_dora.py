"""DoRA adapters (PEFT ``use_dora``) against PEFT's own merge_and_unload(), and the formula
against a closed form."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig

from spectra.errors import AmbiguousInputError
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, detect_kind, open_checkpoint
from spectra.loaders.dora import dora_delta
from tests.loaders.conftest import Toy, make_peft_adapter, relative_error

F64 = LoadOptions(dtype=torch.float64)


def test_dora_delta_closed_form() -> None:
    # W0 = I (2×2), s·B·A = diag(3, 0): V = diag(4, 1), row norms (4, 1). With m = (2, 5):
    # W' = diag(2/4 · 4, 5/1 · 1) = diag(2, 5), so ΔW = diag(1, 4).
    w0 = torch.eye(2, dtype=torch.float64)
    lora = torch.diag(torch.tensor([3.0, 0.0], dtype=torch.float64))
    m = torch.tensor([2.0, 5.0], dtype=torch.float64)
    want = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(dora_delta(w0, lora, m, out_dim=0), want, atol=1e-15)
    # The same update stored transposed (Conv1D / embedding layout): norms over columns.
    assert torch.allclose(dora_delta(w0.T, lora.T, m, out_dim=1), want.T, atol=1e-15)


def test_dora_at_init_is_zero() -> None:
    # m = ‖W0‖ per output row and B = 0 at initialisation: ΔW = 0 exactly.
    w0 = torch.randn(5, 7, dtype=torch.float64)
    m = torch.linalg.vector_norm(w0, dim=1)
    assert dora_delta(w0, torch.zeros_like(w0), m, out_dim=0).abs().max() < 1e-15


@pytest.mark.parametrize(
    "targets", [["lin1", "lin2"], ["emb"], ["conv"]], ids=["linear", "embedding", "conv"]
)
def test_dora_matches_peft_merge(tmp_path: Path, targets: list[str]) -> None:
    cfg = LoraConfig(r=2, lora_alpha=3, target_modules=targets, use_dora=True)
    made = make_peft_adapter(Toy().double(), cfg, tmp_path / "dora")
    assert detect_kind(made.adapter) == "dora"
    reader = open_checkpoint(made.adapter, base=open_tensors(made.base), options=F64)
    assert reader.kind == "dora"
    assert sorted(i.module for i in reader.modules()) == sorted(made.oracle)
    for name, want in made.oracle.items():
        upd = reader.update(name)
        assert not upd.factored and upd.dtype == torch.float64
        assert relative_error(upd.dense, want) < 1e-12, name


def test_dora_conv1d_fan_in_fan_out_matches_peft(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    gpt2 = GPT2Model(GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    cfg = LoraConfig(
        r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True
    )
    made = make_peft_adapter(gpt2.double(), cfg, tmp_path / "dora")
    reader = open_checkpoint(made.adapter, base=open_tensors(made.base), options=F64)
    upd = reader.update("h.0.attn.c_attn")
    assert upd.shape == (16, 48)  # Conv1D stores (in, out): the norm runs over columns
    assert relative_error(upd.dense, made.oracle["h.0.attn.c_attn"]) < 1e-12


def test_dora_float32_reader_close_to_peft(tmp_path: Path) -> None:
    cfg = LoraConfig(r=2, lora_alpha=3, target_modules=["lin1"], use_dora=True)
    made = make_peft_adapter(Toy(), cfg, tmp_path / "dora")
    reader = open_checkpoint(made.adapter, base=open_tensors(made.base))
    assert relative_error(reader.update("lin1").dense, made.oracle["lin1"]) < 1e-5


def test_dora_without_base_lists_modules_but_refuses_delta(tmp_path: Path) -> None:
    cfg = LoraConfig(r=2, lora_alpha=3, target_modules=["lin1"], use_dora=True)
    made = make_peft_adapter(Toy(), cfg, tmp_path / "dora")
    reader = open_checkpoint(made.adapter)
    (info,) = reader.modules()
    assert info.rank is None and "needs BASE" in info.detail["structure"]
    with pytest.raises(AmbiguousInputError, match="needs BASE") as e:
        reader.update("lin1")
    assert e.value.key == "lin1"
