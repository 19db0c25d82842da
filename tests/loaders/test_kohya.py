"""kohya / sd-scripts LoRA files built here from their documented layout (safetensors, kohya key
names), checked against sd-scripts' merge formulas and against a base U-Net's module names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import AmbiguousInputError, CheckpointMismatchError, UnsupportedFormatError
from spectra.io import open_tensors
from spectra.loaders import KohyaReader, LoadOptions, detect_kind, open_checkpoint

F64 = LoadOptions(dtype=torch.float64)
# A diffusers-style U-Net fragment: module paths with '_' inside components.
UNET = {
    "down_blocks.0.attentions.0.proj_in.weight": (8, 6),
    "down_blocks.0.resnets.0.conv1.weight": (4, 3, 3, 3),
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight": (6, 8),
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight": (8, 8),
}


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _base(tmp_path: Path, shapes: dict[str, tuple[int, ...]] = UNET, prefix: str = "") -> Path:
    path = tmp_path / "unet.safetensors"
    save_file({prefix + k: _rand(*s, seed=i) for i, (k, s) in enumerate(shapes.items())}, str(path))
    return path


def _kohya(module: str, prefix: str = "lora_unet_") -> str:
    return prefix + module.replace(".", "_")


def _lora_file(tmp_path: Path, alphas: dict[str, float | None], r: int = 2) -> tuple[Path, dict]:
    """lora_down (r, in[, kh, kw]) / lora_up (out, r[, 1, 1]) / alpha per U-Net module."""
    tensors, factors = {}, {}
    for i, (key, shape) in enumerate(UNET.items()):
        name = _kohya(key.removesuffix(".weight"))
        down = _rand(r, *shape[1:], seed=10 + i)
        up = _rand(shape[0], r, *([1, 1] if len(shape) == 4 else []), seed=20 + i)
        tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
        alpha = alphas.get(key)
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(alpha)
        factors[key.removesuffix(".weight")] = (down, up, alpha)
    path = tmp_path / "kohya.safetensors"
    save_file(
        tensors,
        str(path),
        metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(r)},
    )
    return path, factors


def _sd_scripts_delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """sd-scripts networks/merge_lora.py: linear / 1×1 conv by matmul, k×k conv by conv2d."""
    if down.ndim == 2:
        return up @ down * scale
    if down.shape[2:] == (1, 1):
        return (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2))[:, :, None, None] * scale
    return torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * scale


def test_kohya_lora_matches_sd_scripts_merge_and_maps_names(tmp_path: Path) -> None:
    alphas = {k: 1.0 for k in UNET} | {"down_blocks.0.resnets.0.conv1.weight": 0.0}
    path, factors = _lora_file(tmp_path, alphas)
    assert detect_kind(path) == "kohya"
    reader = open_checkpoint(path, base=open_tensors(_base(tmp_path)), options=F64)
    assert isinstance(reader, KohyaReader) and reader.kind == "kohya"
    assert sorted(i.module for i in reader.modules()) == sorted(factors)
    assert reader.config["ss_network_module"] == "networks.lora"
    for module, (down, up, alpha) in factors.items():
        scale = (alpha or 2) / 2  # alpha 0 (or missing) means alpha = r = 2
        want = _sd_scripts_delta(down, up, scale)
        upd = reader.update(module)
        assert upd.factored and upd.inner_rank == 2
        assert torch.allclose(upd.materialize(), want.reshape(want.shape[0], -1), atol=1e-12), (
            module
        )
    conv = {i.module: i for i in reader.modules()}["down_blocks.0.resnets.0.conv1"]
    assert conv.shape == (4, 27) and "alpha = r" in conv.scaling


def test_missing_alpha_means_alpha_equals_r(tmp_path: Path) -> None:
    path, factors = _lora_file(tmp_path, alphas={})
    reader = open_checkpoint(path, options=F64)
    down, up, _ = factors["down_blocks.0.attentions.0.proj_in"]
    upd = reader.update("lora_unet_down_blocks_0_attentions_0_proj_in")  # no base: kohya names
    assert torch.allclose(upd.materialize(), up @ down, atol=1e-12)  # s = r / r = 1
    assert any("kohya's flattened names" in n for n in reader.report.notes)


def test_base_with_extra_prefix_is_matched_by_suffix(tmp_path: Path) -> None:
    path, _ = _lora_file(tmp_path, alphas={})
    reader = open_checkpoint(path, base=open_tensors(_base(tmp_path, prefix="unet.")))
    assert "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0" in {
        i.module for i in reader.modules()
    }


def test_text_encoder_group_absent_from_base_is_left_out(tmp_path: Path) -> None:
    path, _ = _lora_file(tmp_path, alphas={})
    src = open_tensors(path)
    keys = src.keys()  # TensorSource is not iterable
    tensors = {k: src.get(k) for k in keys}
    te = _kohya("text_model.encoder.layers.0.mlp.fc1", prefix="lora_te_")
    tensors |= {
        f"{te}.lora_down.weight": _rand(2, 6, seed=1),
        f"{te}.lora_up.weight": _rand(8, 2, seed=2),
    }
    save_file(tensors, str(tmp_path / "both.safetensors"))
    reader = open_checkpoint(tmp_path / "both.safetensors", base=open_tensors(_base(tmp_path)))
    assert len(reader.modules()) == len(UNET)
    assert any("lora_te_" in n and "not analysed" in n for n in reader.report.notes)


def test_ambiguous_flattening_lists_candidates(tmp_path: Path) -> None:
    # 'a_b.c' and 'a.b_c' both flatten to 'a_b_c'.
    shapes = {"a_b.c.weight": (3, 4), "a.b_c.weight": (3, 4)}
    tensors = {"lora_unet_a_b_c.lora_down.weight": _rand(1, 4, seed=1),
               "lora_unet_a_b_c.lora_up.weight": _rand(3, 1, seed=2)}  # fmt: skip
    save_file(tensors, str(tmp_path / "k.safetensors"))
    with pytest.raises(AmbiguousInputError, match=r"'a\.b_c', 'a_b\.c'") as e:
        open_checkpoint(tmp_path / "k.safetensors", base=open_tensors(_base(tmp_path, shapes)))
    assert e.value.key == "lora_unet_a_b_c"
    # Different shapes tell them apart: no guess, the evidence decides.
    shapes["a.b_c.weight"] = (5, 4)
    reader = open_checkpoint(tmp_path / "k.safetensors", base=open_tensors(_base(tmp_path, shapes)))
    assert [i.module for i in reader.modules()] == ["a_b.c"]


def test_wrong_base_is_refused(tmp_path: Path) -> None:
    path, _ = _lora_file(tmp_path, alphas={})
    shapes = dict(UNET) | {"down_blocks.0.attentions.0.proj_in.weight": (8, 7)}
    with pytest.raises(CheckpointMismatchError, match=r"\(8, 6\).*\(8, 7\)"):
        open_checkpoint(path, base=open_tensors(_base(tmp_path, shapes)))
    partial = {k: v for k, v in UNET.items() if "proj_in" not in k}
    with pytest.raises(CheckpointMismatchError, match="1 of 4 lora_unet_ modules"):
        open_checkpoint(path, base=open_tensors(_base(tmp_path, partial)))
    skip = LoadOptions(skip_mismatched=True)
    reader = open_checkpoint(path, base=open_tensors(_base(tmp_path, partial)), options=skip)
    assert sorted(i.module for i in reader.modules()) == sorted(
        k.removesuffix(".weight") for k in partial
    )
    (name,) = reader.report.skipped
    assert name == "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert "(8, 6)" in reader.report.skipped[name]


@pytest.mark.parametrize(
    ("param", "why"),
    [("lora_mid.weight", "Tucker"), ("oft_blocks", "OFT")],
)
def test_unread_decompositions_are_refused(tmp_path: Path, param: str, why: str) -> None:
    tensors = {"lora_unet_x.lora_down.weight": _rand(2, 4, seed=1),
               "lora_unet_x.lora_up.weight": _rand(3, 2, seed=2), f"lora_unet_x.{param}": _rand(2, 2, seed=3)}  # fmt: skip
    save_file(tensors, str(tmp_path / "k.safetensors"))
    with pytest.raises(UnsupportedFormatError, match=why) as e:
        open_checkpoint(tmp_path / "k.safetensors")
    assert e.value.key == f"lora_unet_x.{param}"
