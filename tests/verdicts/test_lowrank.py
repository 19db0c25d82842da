"""The merged-adapter check: numerical rank of ΔW from the engine, on closed forms and on a real
PEFT merge_and_unload() checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch import nn

from spectra.io import open_tensors
from spectra.loaders import open_checkpoint
from spectra.verdicts.lowrank import (
    CLIFF_RATIO,
    RankCheck,
    check_ranks,
    estimate_rank,
    merged_adapter_lines,
)
from tests.loaders.conftest import randomize_adapter
from tests.models import Linears


def mlp() -> nn.Module:
    return Linears(up=(32, 40), down=(40, 32), out=(32, 32))


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return path


def merged_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """(base, merged): a rank-2 LoRA on up/down folded into float32 weights by PEFT."""
    torch.manual_seed(0)
    model = mlp()
    base = _save(model.state_dict(), tmp_path / "base.safetensors")
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["up", "down"]))
    randomize_adapter(peft_model)
    return base, _save(peft_model.merge_and_unload().state_dict(), tmp_path / "merged.safetensors")


def test_rank_check_flags_low_rank_at_a_cliff_only() -> None:
    assert RankCheck("m", (32, 40), 2, cliff=1e-6).low_rank
    assert RankCheck("m", (32, 40), 8, cliff=1e-6).low_rank  # 8 ≤ 0.25 · 32
    assert not RankCheck("m", (32, 40), 2).low_rank  # no cliff: a smooth low-rank spectrum
    assert not RankCheck("m", (32, 40), 9, cliff=1e-6).low_rank
    assert not RankCheck("m", (32, 40), 0).low_rank and not RankCheck("m", (4, 4), None).low_rank


def test_merged_lora_is_numerically_rank_r(tmp_path: Path) -> None:
    base, merged = merged_checkpoint(tmp_path)
    reader = open_checkpoint(merged, base=open_tensors(base))
    assert reader.kind == "full"  # analysed as full fine-tuning, which it is
    ranks = {c.module: c.numerical_rank for c in check_ranks(reader)}
    assert ranks == {"up": 2, "down": 2, "out": 0}
    lines = merged_adapter_lines(check_ranks(reader))
    assert lines[0].startswith("2 of 3 modules look like a rank-2 merged adapter")
    assert lines[1].startswith("ΔW is zero in 1 module (unchanged)") and len(lines) == 2


def test_full_fine_tune_is_not_flagged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = mlp().state_dict()
    base = _save(sd, tmp_path / "base.safetensors")
    g = torch.Generator().manual_seed(1)
    tuned = _save({k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()},
                  tmp_path / "tuned.safetensors")  # fmt: skip
    checks = check_ranks(open_checkpoint(tuned, base=open_tensors(base)))
    assert [c.numerical_rank for c in checks] == [32, 32, 32]
    assert merged_adapter_lines(checks) == []


def test_estimate_rank_finds_the_cliff_not_the_largest_head_gap() -> None:
    head = torch.tensor([10.0, 0.5, 0.4, 0.3], dtype=torch.float64)  # σ2/σ1 = 0.05: a head gap
    tail = torch.linspace(3e-4, 1e-4, 60, dtype=torch.float64)  # rounding noise level
    values = torch.cat([head, tail])  # (64,)
    rank, cliff = estimate_rank(values, (64, 80), tolerance=1e-3)
    assert rank == 4 and cliff == pytest.approx(3e-4 / 0.3)
    # a smooth spectrum has no cliff: rank above τ, not flagged
    smooth = torch.logspace(0, -2, 64, dtype=torch.float64)
    rank, cliff = estimate_rank(smooth, (64, 64), tolerance=1e-6)
    assert rank == 64 and cliff is None
    assert estimate_rank(torch.zeros(8, dtype=torch.float64), (8, 8), 0.0) == (0, None)
    assert CLIFF_RATIO < 1


def _lora_merged_in_half_precision(tmp_path: Path, dtype: torch.dtype, r: int):
    """(base, merged, targets): a tiny BERT in ``dtype``, a PEFT LoRA of rank r on six
    linear layers with trained-like factors, merged by PEFT's merge_and_unload, both saved
    by transformers as safetensors."""
    from tests.models import tiny_bert

    torch.manual_seed(0)
    model = tiny_bert(hidden_size=64, intermediate_size=128, num_hidden_layers=2, pooling=False)
    model.to(dtype)
    model.save_pretrained(tmp_path / "base")
    targets = ["query", "key", "value", "attention.output.dense", "intermediate.dense",
               "output.dense"]  # fmt: skip
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:  # (r, in): Kaiming-like
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif "lora_B" in name:  # (out, r): what training leaves, about W0's scale
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    merged = peft_model.merge_and_unload()
    assert next(merged.parameters()).dtype == dtype
    merged.save_pretrained(tmp_path / "merged")
    return tmp_path / "base", tmp_path / "merged"


@pytest.mark.parametrize(("dtype", "r"), [(torch.bfloat16, 8), (torch.float16, 4)])
def test_peft_lora_merged_into_a_half_precision_base_is_found_in_one_line(
    tmp_path: Path, dtype: torch.dtype, r: int
) -> None:
    base, merged = _lora_merged_in_half_precision(tmp_path, dtype, r)
    base_src = open_tensors(base)
    reader = open_checkpoint(merged, base=base_src)
    checks = check_ranks(reader, base=base_src)
    adapted = [c for c in checks if c.numerical_rank != 0]
    assert len(adapted) == 12  # 6 targets × 2 layers; everything else is unchanged
    name = str(dtype).removeprefix("torch.")
    for c in adapted:
        assert c.numerical_rank == r and c.low_rank and c.storage_dtype == name, c
        assert c.cliff is not None and c.cliff < 0.1
    # the float32 numerical-rank rule calls them full rank: the rounding fills the spectrum
    from spectra.engine.metrics import dominance_metrics
    from spectra.engine.svd import spectrum

    f32_rank = dominance_metrics(spectrum(reader.update(adapted[0].module)))["numerical_rank"]
    assert f32_rank is not None and f32_rank > 4 * r
    lines = merged_adapter_lines(checks)
    assert lines[0].startswith(f"12 of {len(checks)} modules look like a rank-{r} merged adapter")
    assert name in lines[0]
    assert len([ln for ln in lines if "merged adapter" in ln]) == 1


def test_half_precision_full_fine_tune_is_not_flagged(tmp_path: Path) -> None:
    from tests.models import tiny_bert

    torch.manual_seed(0)
    model = tiny_bert(hidden_size=64, intermediate_size=128, num_hidden_layers=1, pooling=False)
    model.to(torch.bfloat16)
    model.save_pretrained(tmp_path / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_((0.002 * torch.randn(p.shape, generator=g)).to(p.dtype))
    model.save_pretrained(tmp_path / "tuned")
    base_src = open_tensors(tmp_path / "base")
    checks = check_ranks(open_checkpoint(tmp_path / "tuned", base=base_src), base=base_src)
    assert checks and not any(c.low_rank for c in checks)
    assert not [ln for ln in merged_adapter_lines(checks) if "merged adapter" in ln]


def test_inspect_prints_one_line_for_a_bf16_merged_adapter(tmp_path: Path, capsys) -> None:
    from spectra_cli.app import main

    base, merged = _lora_merged_in_half_precision(tmp_path, torch.bfloat16, 8)
    capsys.readouterr()
    try:
        main(["inspect", str(merged), "--base", str(base)])
    except SystemExit as e:
        assert not e.code
    out = capsys.readouterr().out
    verdicts = [ln for ln in out.splitlines() if "merged adapter" in ln]
    assert len(verdicts) == 1 and verdicts[0].startswith("12 of ")
    assert "rank-8 merged adapter" in verdicts[0]
