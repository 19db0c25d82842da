"""`spectra inspect` on every adapter format, driven in-process through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import save_file

from spectra.loaders import write_lora_state_dict
from tests.loaders.conftest import Toy, make_peft_adapter
from tests.verdicts.test_lowrank import merged_checkpoint


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _peft(tmp_path: Path, **cfg) -> tuple[list[str], list[str]]:
    made = make_peft_adapter(Toy(), LoraConfig(r=2, lora_alpha=4, **cfg), tmp_path / "a")
    return [str(made.adapter), "--base", str(made.base)], []


def _plain(tmp_path: Path) -> tuple[list[str], list[str]]:
    t = {
        "base_model.model.lin1.lora_A.weight": _r(2, 6),
        "base_model.model.lin1.lora_B.weight": _r(5, 2),
    }
    return [str(write_lora_state_dict(tmp_path / "lora.pt", t, lora_alpha=4))], []


def _kohya(tmp_path: Path, params: dict[str, torch.Tensor]) -> list[str]:
    save_file(
        {f"lora_unet_blk_proj.{k}": v for k, v in params.items()}, str(tmp_path / "k.safetensors")
    )
    return [str(tmp_path / "k.safetensors")]


def _merged(tmp_path: Path) -> tuple[list[str], list[str]]:
    base, merged = merged_checkpoint(tmp_path)
    return [str(merged), "--base", str(base)], []


CASES = {
    "lora": (lambda p: _peft(p, target_modules=["lin1", "conv"]),
             ["kind:    lora", "LoRA: factored, rank ≤ r = 2", "alpha/r = 4/2 = 2", "4×27"]),
    "dora": (lambda p: _peft(p, target_modules=["lin1"], use_dora=True),
             ["kind:    dora", "DoRA: dense", "then the DoRA magnitude m"]),
    "modules_to_save": (lambda p: _peft(p, target_modules=["lin1"], modules_to_save=["head"]),
                        ["modules_to_save: dense, saved − W0", "W_saved - W_base"]),
    "plain": (_plain, ["kind:    lora", "scaling_from: file metadata", "lin1"]),
    "kohya": (lambda p: (_kohya(p, {"lora_down.weight": _r(2, 4), "lora_up.weight": _r(3, 2)}), []),
              ["kind:    kohya", "LoRA: factored", "alpha missing or 0: alpha = r", "kohya's flattened names"]),
    "loha": (lambda p: (_kohya(p, {"hada_w1_a": _r(3, 2), "hada_w1_b": _r(2, 4), "hada_w2_a": _r(3, 2),
                                   "hada_w2_b": _r(2, 4)}), []),
             ["kind:    loha", "LoHa: rank ≤ r1·r2 = 2·2", "dense"]),
    "lokr": (lambda p: (_kohya(p, {"lokr_w1": _r(1, 2), "lokr_w2": _r(3, 2)}), []),
             ["kind:    lokr", "LoKr: rank = rank(w1)·rank(w2)", "1 (LoKr with w1 and w2 stored whole)"]),
    "merged": (_merged, ["kind:    full", "num. rank", "2 of 3 modules look like a rank-2 merged adapter"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_inspect_lists_each_kind(case: str, tmp_path: Path, run_cli) -> None:
    make, expected = CASES[case]
    args, extra = make(tmp_path)
    res = run_cli("inspect", *args, *extra)
    assert res.code == 0, res.err
    for text in expected:
        assert text in res.out, (text, res.out)


def test_inspect_without_alpha_names_the_options(tmp_path: Path, run_cli) -> None:
    t = {"lin1.lora_A": _r(2, 6), "lin1.lora_B": _r(5, 2)}  # loralib: α not stored
    torch.save(t, tmp_path / "loralib.pt")
    res = run_cli("inspect", tmp_path / "loralib.pt")
    assert res.code == 1 and "--lora-alpha" in res.err and "--lora-scale" in res.err
    res = run_cli("inspect", tmp_path / "loralib.pt", "--lora-alpha", "8")
    assert res.code == 0 and "alpha/r = 8/2 = 4" in res.out and "--lora-alpha" in res.out
