"""Checkpoints that only partly match their base: a resized embedding (``skip_mismatched``),
an integer-typed weight beside a floating one, a weight with a zero-sized dimension. Files
written by the real libraries (transformers' resize_token_embeddings, PEFT, torch.save)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch import nn

from spectra.errors import CheckpointMismatchError
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, open_checkpoint
from tests.loaders.conftest import randomize_adapter
from tests.models import tiny_bert

F64 = LoadOptions(dtype=torch.float64)
SKIP = LoadOptions(dtype=torch.float64, skip_mismatched=True)
EMB = "embeddings.word_embeddings"
QUERY = "encoder.layer.0.attention.self.query"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    """A base BERT (vocab 50) and a fine-tune whose vocabulary grew to 53 tokens."""
    out = tmp_path_factory.mktemp("resized")
    torch.manual_seed(0)
    base = tiny_bert()
    base_sd = _state(base)
    save_file(base_sd, out / "base.safetensors")
    base.resize_token_embeddings(53)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tuned_sd = _state(base)
    torch.save(tuned_sd, out / "tuned.pt")
    return out / "base.safetensors", out / "tuned.pt", base_sd, tuned_sd


def test_resized_embedding_is_refused_by_default(resized) -> None:
    base, tuned, _, _ = resized
    with pytest.raises(CheckpointMismatchError) as err:
        open_checkpoint(tuned, base=open_tensors(base), options=F64)
    msg = str(err.value)
    assert f"{EMB}.weight" in msg and "(53, 16)" in msg and "(50, 16)" in msg
    assert "--skip-mismatched" in msg


def test_skip_mismatched_analyses_the_rest_and_says_what_it_skipped(resized) -> None:
    base, tuned, base_sd, tuned_sd = resized
    reader = open_checkpoint(tuned, base=open_tensors(base), options=SKIP)
    names = [m.module for m in reader.modules()]
    assert EMB not in names and QUERY in names
    assert len(names) == sum(k.endswith(".weight") and v.ndim == 2 for k, v in base_sd.items()) - 1
    assert list(reader.report.skipped) == [f"{EMB}.weight"]
    reason = reader.report.skipped[f"{EMB}.weight"]
    assert "(53, 16)" in reason and "(50, 16)" in reason
    assert any("--skip-mismatched" in n and EMB in n for n in reader.report.notes)
    want = tuned_sd[f"{QUERY}.weight"].double() - base_sd[f"{QUERY}.weight"].double()
    assert torch.equal(reader.update(QUERY).materialize(), want)


def test_skip_mismatched_on_a_peft_adapter_with_a_resized_embedding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_bert()
    model.resize_token_embeddings(53)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["query", "word_embeddings"])
    peft_model = get_peft_model(model, config)
    randomize_adapter(peft_model)
    peft_model.save_pretrained(tmp_path / "lora")
    torch.manual_seed(0)
    save_file(_state(tiny_bert()), tmp_path / "base.safetensors")  # vocabulary 50
    base = open_tensors(tmp_path / "base.safetensors")
    with pytest.raises(CheckpointMismatchError, match="word_embeddings"):
        open_checkpoint(tmp_path / "lora", base=base, options=F64)
    reader = open_checkpoint(tmp_path / "lora", base=base, options=SKIP)
    names = [m.module for m in reader.modules()]
    assert names == [f"encoder.layer.{i}.attention.self.query" for i in (0, 1)]
    assert list(reader.report.skipped) == [EMB]
    assert "(53, 16)" in reader.report.skipped[EMB] or "(16, 53)" in reader.report.skipped[EMB]


def test_nothing_left_after_skipping_is_still_refused(tmp_path: Path) -> None:
    save_file({"a.weight": torch.ones(4, 3)}, tmp_path / "t.safetensors")
    save_file({"a.weight": torch.ones(4, 5)}, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"\(4, 3\)"):
        open_checkpoint(tmp_path / "t.safetensors", base=open_tensors(tmp_path / "b.safetensors"),
                        options=SKIP)  # fmt: skip


def _int8(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 quantization of a weight (what a quantized base stores)."""
    return (w / w.abs().max() * 127).round().to(torch.int8)


def test_integer_base_weight_is_named_and_the_rest_is_compared(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base_sd, tuned_sd = _state(tiny_bert()), _state(tiny_bert())
    quantized = {**base_sd, f"{QUERY}.weight": _int8(base_sd[f"{QUERY}.weight"])}
    save_file(quantized, tmp_path / "base.safetensors")
    save_file(tuned_sd, tmp_path / "tuned.safetensors")
    reader = open_checkpoint(
        tmp_path / "tuned.safetensors",
        base=open_tensors(tmp_path / "base.safetensors"),
        options=F64,
    )
    names = [m.module for m in reader.modules()]
    assert QUERY not in names and len(names) > 5
    reason = reader.report.skipped[f"{QUERY}.weight"]
    assert "int8" in reason and "float32" in reason and "base.safetensors" in reason
    assert f"{QUERY}.weight" not in reader.report.only_in_tuned
    assert any(QUERY in n and "int8" in n for n in reader.report.notes)


def test_integer_base_alone_is_refused_naming_file_key_and_dtype(run_cli, tmp_path: Path) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    save_file({"proj.weight": _int8(lin.weight.detach())}, tmp_path / "base.safetensors")
    save_file({"proj.weight": lin.weight.detach() + 0.1}, tmp_path / "tuned.safetensors")
    res = run_cli("compare", tmp_path / "base.safetensors", tmp_path / "tuned.safetensors")
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1, res.err
    line = lines[0]
    assert "no adapted 2-D weights" not in line
    for needle in ("base.safetensors", "tuned.safetensors", "proj.weight", "int8", "float32"):
        assert needle in line, (needle, line)


def test_zero_sized_weight_is_skipped_and_counted(run_cli, tmp_path: Path) -> None:
    """``nn.Linear(8, 0)`` is a real layer whose weight has shape (0, 8)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 5), nn.Linear(8, 0))
    base_sd = _state(model)
    tuned_sd = {k: v + 0.5 for k, v in base_sd.items()}
    torch.save(base_sd, tmp_path / "base.pt")
    torch.save(tuned_sd, tmp_path / "tuned.pt")
    reader = open_checkpoint(tmp_path / "tuned.pt", base=open_tensors(tmp_path / "base.pt"))
    assert [m.module for m in reader.modules()] == ["0"]
    assert "zero-sized" in reader.report.skipped["1.weight"]
    assert any("zero-sized" in n and "'1.weight' (0, 8)" in n for n in reader.report.notes)
    res = run_cli("compare", tmp_path / "base.pt", tmp_path / "tuned.pt")
    assert res.code == 0, res.err
    assert "zero-sized" in res.out + res.err


@pytest.mark.parametrize(
    ("tensors", "key"),
    [
        ({"a.lora_A.weight": torch.ones(0, 4), "a.lora_B.weight": torch.ones(3, 0)},
         "a.lora_A.weight"),
        ({"lora_unet_a.lora_down.weight": torch.ones(0, 4),
          "lora_unet_a.lora_up.weight": torch.ones(3, 0)}, "lora_unet_a.lora_down.weight"),
    ],
    ids=["plain-lora", "kohya"],
)  # fmt: skip
def test_rank_zero_adapter_factors_are_refused_in_one_line(
    run_cli, tmp_path: Path, tensors: dict[str, torch.Tensor], key: str
) -> None:
    """No library writes a rank-0 LoRA: such a file is broken, and said so (not a crash)."""
    save_file(tensors, tmp_path / "a.safetensors", metadata={"lora_alpha": "2"})
    res = run_cli("inspect", tmp_path / "a.safetensors")
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1, res.err
    assert key in lines[0] and "(0, 4)" in lines[0] and "zero-sized" in lines[0]
