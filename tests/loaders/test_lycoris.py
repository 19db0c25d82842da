"""LyCORIS LoHa and LoKr files built here from LyCORIS's documented formulas (safetensors, its
key names), read as dense updates with the rank bounds in ModuleInfo.detail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.engine.metrics import dominance_metrics
from spectra.engine.svd import spectrum
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, detect_kind, open_checkpoint
from spectra.loaders.lycoris import lycoris_scale

F64 = LoadOptions(dtype=torch.float64)


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rank(reader, module: str) -> int:
    return int(dominance_metrics(spectrum(reader.update(module)))["numerical_rank"])


def test_scale_rule() -> None:
    assert lycoris_scale(8.0, 4)[0] == 2.0
    assert lycoris_scale(None, 4)[0] == lycoris_scale(0.0, 4)[0] == 1.0  # alpha = r
    assert lycoris_scale(8.0, None) == (1.0, "1 (LoKr with w1 and w2 stored whole)")


def test_loha_matches_formula_and_rank_is_r_squared(tmp_path: Path) -> None:
    r, out, inp = 2, 9, 8
    w = {k: _rand(*s, seed=i) for i, (k, s) in enumerate(
        {"hada_w1_a": (out, r), "hada_w1_b": (r, inp), "hada_w2_a": (out, r), "hada_w2_b": (r, inp)}.items())}  # fmt: skip
    tensors = {f"lora_unet_blk_proj.{k}": v for k, v in w.items()}
    tensors["lora_unet_blk_proj.alpha"] = torch.tensor(1.0)
    save_file(tensors, str(tmp_path / "loha.safetensors"))
    assert detect_kind(tmp_path / "loha.safetensors") == "loha"
    reader = open_checkpoint(tmp_path / "loha.safetensors", options=F64)
    assert reader.kind == "loha"
    want = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"]) * (1.0 / r)
    upd = reader.update("lora_unet_blk_proj")
    assert not upd.factored and torch.allclose(upd.dense, want, atol=1e-12)
    (info,) = reader.modules()
    assert info.rank is None and "rank ≤ r1·r2 = 2·2" in info.detail["structure"]
    assert _rank(reader, "lora_unet_blk_proj") == r * r  # generic factors reach the bound


def test_loha_conv_maps_to_base(tmp_path: Path) -> None:
    # Non-Tucker conv LoHa: w1_b / w2_b are (r, in·kh·kw); ΔW is the flattened kernel update.
    r = 2
    w = [_rand(4, r, seed=1), _rand(r, 27, seed=2), _rand(4, r, seed=3), _rand(r, 27, seed=4)]
    keys = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    save_file({f"lora_unet_down_blocks_0_conv.{k}": v for k, v in zip(keys, w, strict=True)},
              str(tmp_path / "l.safetensors"))  # fmt: skip
    save_file(
        {"down_blocks.0.conv.weight": _rand(4, 3, 3, 3, seed=5)}, str(tmp_path / "b.safetensors")
    )
    reader = open_checkpoint(tmp_path / "l.safetensors", base=open_tensors(tmp_path / "b.safetensors"),
                             options=F64)  # fmt: skip
    upd = reader.update("down_blocks.0.conv")
    assert torch.allclose(upd.dense, (w[0] @ w[1]) * (w[2] @ w[3]), atol=1e-12)  # no alpha: s = 1


def test_lokr_decomposed_w2_matches_kron_and_rank(tmp_path: Path) -> None:
    # w1 (2, 3) whole, w2 = w2_a (4, 1) @ w2_b (1, 5): r = 1, alpha = 0.5 → scale 0.5.
    w1, w2_a, w2_b = _rand(2, 3, seed=1), _rand(4, 1, seed=2), _rand(1, 5, seed=3)
    tensors = {"lycoris_fc.lokr_w1": w1, "lycoris_fc.lokr_w2_a": w2_a, "lycoris_fc.lokr_w2_b": w2_b,
               "lycoris_fc.alpha": torch.tensor(0.5)}  # fmt: skip
    save_file(tensors, str(tmp_path / "lokr.safetensors"))
    assert detect_kind(tmp_path / "lokr.safetensors") == "lokr"
    reader = open_checkpoint(tmp_path / "lokr.safetensors", options=F64)
    upd = reader.update("lycoris_fc")
    assert upd.shape == (8, 15)
    assert torch.allclose(upd.dense, torch.kron(w1, w2_a @ w2_b) * 0.5, atol=1e-12)
    (info,) = reader.modules()
    assert info.scaling.startswith("alpha/r = 0.5/1")
    assert "rank(w1)·rank(w2) ≤ 2·1 = 2" in info.detail["structure"]
    assert _rank(reader, "lycoris_fc") == 2  # rank(w1)·rank(w2) = 2·1


def test_lokr_both_whole_has_scale_one_and_conv_kron_matches_4d(tmp_path: Path) -> None:
    # LyCORIS builds a conv ΔW as kron(w1[:, :, None, None], w2) with w2 (b, d, kh, kw).
    w1, w2 = _rand(2, 1, seed=1), _rand(2, 3, 3, 3, seed=2)
    tensors = {
        "lora_unet_c.lokr_w1": w1,
        "lora_unet_c.lokr_w2": w2,
        "lora_unet_c.alpha": torch.tensor(7.0),
    }
    save_file(tensors, str(tmp_path / "k.safetensors"))
    reader = open_checkpoint(tmp_path / "k.safetensors", options=F64)
    want = torch.kron(w1[:, :, None, None], w2)  # (4, 3, 3, 3); alpha ignored: both whole
    assert torch.allclose(reader.update("lora_unet_c").dense, want.reshape(4, 27), atol=1e-12)


def test_mixed_file_is_kohya_kind_with_algorithm_per_module(tmp_path: Path) -> None:
    tensors = {
        "lora_unet_a.lora_down.weight": _rand(1, 4, seed=1), "lora_unet_a.lora_up.weight": _rand(3, 1, seed=2),
        "lora_unet_b.hada_w1_a": _rand(3, 1, seed=3), "lora_unet_b.hada_w1_b": _rand(1, 4, seed=4),
        "lora_unet_b.hada_w2_a": _rand(3, 1, seed=5), "lora_unet_b.hada_w2_b": _rand(1, 4, seed=6),
        "lora_unet_c.diff": _rand(3, 4, seed=7), "lora_unet_c.diff_b": _rand(3, seed=8),
    }  # fmt: skip
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    reader = open_checkpoint(tmp_path / "mixed.safetensors", options=F64)
    assert reader.kind == "kohya"
    assert {i.module: i.detail["algorithm"] for i in reader.modules()} == {
        "lora_unet_a": "lora", "lora_unet_b": "loha", "lora_unet_c": "full"}  # fmt: skip
    assert torch.equal(reader.update("lora_unet_c").dense, tensors["lora_unet_c.diff"])
    assert "lora_unet_c.diff_b" in reader.report.skipped_1d


@pytest.mark.parametrize("param", ["hada_t1", "lokr_t2"])
def test_tucker_is_refused(tmp_path: Path, param: str) -> None:
    algo = "hada_w1_a" if param.startswith("hada") else "lokr_w1"
    save_file({f"lora_unet_x.{algo}": _rand(2, 2, seed=1), f"lora_unet_x.{param}": _rand(2, 2, 3, 3, seed=2)},
              str(tmp_path / "t.safetensors"))  # fmt: skip
    from spectra.errors import UnsupportedFormatError

    with pytest.raises(UnsupportedFormatError, match="Tucker"):
        open_checkpoint(tmp_path / "t.safetensors")
