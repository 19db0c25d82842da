"""PEFT ``modules_to_save``: whole saved modules, ΔW = W_saved − W_base, against PEFT's merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from spectra.errors import AmbiguousInputError, CheckpointMismatchError
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, open_checkpoint
from spectra.loaders.modules_to_save import weight_difference
from tests.loaders.conftest import Toy, make_peft_adapter, randomize_adapter, relative_error

F64 = LoadOptions(dtype=torch.float64)


@pytest.fixture
def saved(tmp_path: Path):
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"], modules_to_save=["head", "conv"])
    return make_peft_adapter(Toy().double(), cfg, tmp_path / "a")


def test_saved_modules_match_peft_merge(saved) -> None:
    keys = load_file(str(saved.adapter / "adapter_model.safetensors"))
    assert "base_model.model.head.weight" in keys  # what PEFT 0.21 writes
    reader = open_checkpoint(saved.adapter, base=open_tensors(saved.base), options=F64)
    infos = {i.module: i for i in reader.modules()}
    assert sorted(infos) == sorted(saved.oracle) == ["conv", "head", "lin1"]
    assert infos["head"].rank is None and infos["head"].shape == (3, 7)
    assert infos["conv"].shape == (4, 27)  # kernel flattened to (out, in·kh·kw)
    assert infos["head"].detail["structure"].startswith("modules_to_save: dense")
    for name, want in saved.oracle.items():
        upd = reader.update(name)
        assert upd.factored == (name == "lin1")
        assert relative_error(upd.materialize(), want) < 1e-12, name


def test_saved_module_without_base_is_listed_then_refused(saved) -> None:
    reader = open_checkpoint(saved.adapter)
    assert "needs BASE" in {i.module: i for i in reader.modules()}["head"].detail["structure"]
    with pytest.raises(AmbiguousInputError, match="W_saved − W_base.*needs BASE"):
        reader.update("head")


def test_raw_state_dict_modules_to_save(tmp_path: Path) -> None:
    model = Toy().double()
    base_sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"],
                                                 modules_to_save=["head"]))  # fmt: skip
    randomize_adapter(peft_model)
    raw = peft_model.state_dict()
    assert "base_model.model.head.modules_to_save.default.weight" in raw
    torch.save(raw, tmp_path / "raw.pt")
    torch.save(base_sd, tmp_path / "base.pt")
    merged = peft_model.merge_and_unload().state_dict()
    opts = LoadOptions(dtype=torch.float64, lora_alpha=4)
    reader = open_checkpoint(
        tmp_path / "raw.pt", base=open_tensors(tmp_path / "base.pt"), options=opts
    )
    want = merged["head.weight"] - base_sd["head.weight"]
    assert relative_error(reader.update("head").dense, want) < 1e-12


def test_weight_difference_widens_before_subtracting(tmp_path: Path) -> None:
    # Two bf16 weights one bf16 ulp apart at 256 (ulp = 2): their float32 difference is exact.
    from safetensors.torch import save_file

    save_file(
        {"w": torch.full((2, 2), 256.0, dtype=torch.bfloat16)}, str(tmp_path / "b.safetensors")
    )
    save_file(
        {"w": torch.full((2, 2), 258.0, dtype=torch.bfloat16)}, str(tmp_path / "t.safetensors")
    )
    d = weight_difference(open_tensors(tmp_path / "t.safetensors"), "w",
                          open_tensors(tmp_path / "b.safetensors"), "w", torch.float32)  # fmt: skip
    assert d.dtype == torch.float32 and torch.equal(d, torch.full((2, 2), 2.0))
    save_file({"w": torch.zeros(2, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"\(2, 3\)"):
        weight_difference(open_tensors(tmp_path / "x.safetensors"), "w",
                          open_tensors(tmp_path / "b.safetensors"), "w", torch.float32)  # fmt: skip


class _NestedHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin1 = torch.nn.Linear(6, 5)
        self.cls = torch.nn.Sequential(
            torch.nn.Linear(5, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
        )


def test_saved_head_with_sub_layers(tmp_path: Path) -> None:
    # modules_to_save=["cls"] wraps a Sequential: PEFT saves cls.0.weight and cls.2.weight.
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"], modules_to_save=["cls"])
    made = make_peft_adapter(_NestedHead().double(), cfg, tmp_path / "a")
    reader = open_checkpoint(made.adapter, base=open_tensors(made.base), options=F64)
    assert sorted(i.module for i in reader.modules()) == ["cls.0", "cls.2", "lin1"]
    for name in ("cls.0", "cls.2"):
        assert relative_error(reader.update(name).dense, made.oracle[name]) < 1e-12
