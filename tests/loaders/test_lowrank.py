"""The merged-adapter check: numerical rank of ΔW from the engine, on closed forms and on a real
PEFT merge_and_unload() checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch import nn

from spectra.io import open_tensors
from spectra.loaders import open_checkpoint
from spectra.loaders.lowrank import RankCheck, check_ranks, merged_adapter_lines
from tests.loaders.conftest import randomize_adapter


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(32, 40)
        self.down = nn.Linear(40, 32)
        self.out = nn.Linear(32, 32)


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return path


def merged_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """(base, merged): a rank-2 LoRA on up/down folded into float32 weights by PEFT."""
    torch.manual_seed(0)
    model = Mlp()
    base = _save(model.state_dict(), tmp_path / "base.safetensors")
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["up", "down"]))
    randomize_adapter(peft_model)
    return base, _save(peft_model.merge_and_unload().state_dict(), tmp_path / "merged.safetensors")


def test_rank_check_flags_low_rank_only() -> None:
    assert RankCheck("m", (32, 40), 2).low_rank
    assert RankCheck("m", (32, 40), 8).low_rank  # 8 ≤ 0.25 · 32
    assert not RankCheck("m", (32, 40), 9).low_rank
    assert not RankCheck("m", (32, 40), 0).low_rank and not RankCheck("m", (4, 4), None).low_rank


def test_merged_lora_is_numerically_rank_r(tmp_path: Path) -> None:
    base, merged = merged_checkpoint(tmp_path)
    reader = open_checkpoint(merged, base=open_tensors(base))
    assert reader.kind == "full"  # analysed as full fine-tuning, which it is
    ranks = {c.module: c.numerical_rank for c in check_ranks(reader)}
    assert ranks == {"up": 2, "down": 2, "out": 0}
    lines = merged_adapter_lines(check_ranks(reader))
    assert lines[0].startswith("ΔW is numerically rank 2 in 2 of 3 modules")
    assert "merged adapter" in lines[0] and lines[1].startswith(
        "ΔW is zero in 1 module (unchanged)"
    )


def test_full_fine_tune_is_not_flagged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = Mlp().state_dict()
    base = _save(sd, tmp_path / "base.safetensors")
    g = torch.Generator().manual_seed(1)
    tuned = _save({k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()},
                  tmp_path / "tuned.safetensors")  # fmt: skip
    checks = check_ranks(open_checkpoint(tuned, base=open_tensors(base)))
    assert [c.numerical_rank for c in checks] == [32, 32, 32]
    assert merged_adapter_lines(checks) == []
