"""save_multilora / load_multilora round trips and refusals, and spectra's reader on the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from spectra.errors import (
    AdapterConfigError,
    CheckpointMismatchError,
    FileFormatError,
    UnsafeFileError,
)
from spectra.loaders.base import LoadOptions
from spectra.loaders.multilora import MultiLoRAReader
from spectra.multilora import (
    MultiLoRAConfig,
    inject_multilora,
    load_multilora,
    merge_multilora,
    multilora_layers,
    save_multilora,
)
from tests.models import Linears

CONFIG = MultiLoRAConfig(
    r=8, n=4, lora_alpha=16, parameter_matched=True, target_modules=("up", "down")
)


class _Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_block(width), _block(width)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _block(width: int, hidden: int = 20) -> nn.Module:
    return Linears(up=(width, hidden), down=(hidden, width))


def _model(seed: int, config: MultiLoRAConfig = CONFIG, width: int = 12) -> nn.Module:
    torch.manual_seed(seed)
    model = _Net(width)
    inject_multilora(model, config)
    with torch.no_grad():
        for layer in multilora_layers(model).values():
            layer.multilora_scaling.normal_()
    return model


def _deltas(model: nn.Module) -> dict[str, torch.Tensor]:
    return {p: m.get_delta_weight() for p, m in multilora_layers(model).items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_load_roundtrip_reproduces_delta_exactly(tmp_path: Path, suffix: str) -> None:
    source, target = _model(0), _model(0)
    with torch.no_grad():  # same base weights, other adapter values
        for layer in multilora_layers(target).values():
            layer.reset_parameters()
            layer.multilora_scaling.uniform_()
    x = torch.randn(3, 12)
    assert not torch.allclose(target(x), source(x))
    path = save_multilora(source, tmp_path / f"adapter{suffix}", CONFIG, base_model="tiny")
    assert path == tmp_path / f"adapter{suffix}" and path.is_file()
    assert load_multilora(target, path) == [
        "blocks.0.up",
        "blocks.0.down",
        "blocks.1.up",
        "blocks.1.down",
    ]
    want, got = _deltas(source), _deltas(target)
    assert all(torch.equal(got[p], want[p]) for p in want)
    assert torch.equal(target(x), source(x))


def test_safetensors_file_layout_and_metadata(tmp_path: Path) -> None:
    path = save_multilora(_model(0), tmp_path / "a.safetensors", CONFIG, base_model="tiny")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = f.keys()  # safe_open is not iterable
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    assert meta["format"] == "spectra.multilora" and meta["format_version"] == "1"
    config = json.loads(meta["config"])
    # The file stores the per-module rank: r = 8 // 4.
    assert (config["r"], config["n"], config["lora_alpha"], config["scaling"]) == (
        2,
        4,
        16.0,
        "vector",
    )
    assert config["parameter_matched"] is True and config["base_model"] == "tiny"
    assert config["target_modules"] == ["up", "down"]
    assert shapes["blocks.0.up.multilora_A"] == (4, 2, 12)
    assert shapes["blocks.0.up.multilora_B"] == (4, 20, 2)
    assert shapes["blocks.0.up.multilora_scaling"] == (4, 20)
    assert len(shapes) == 12


def test_save_refuses_config_other_than_the_layers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="was built with"):
        save_multilora(
            _model(0), tmp_path / "a.safetensors", MultiLoRAConfig(r=2, n=4, lora_alpha=4)
        )


def test_load_refuses_other_config(tmp_path: Path) -> None:
    path = save_multilora(_model(0), tmp_path / "a.safetensors", CONFIG)
    other = MultiLoRAConfig(
        r=8, n=4, lora_alpha=8, parameter_matched=True, target_modules=("up", "down")
    )
    with pytest.raises(AdapterConfigError, match=r"\(2, 4, 16\.0, 'vector'\)"):
        load_multilora(_model(1, other), path)


def test_load_refuses_other_targets_and_shapes(tmp_path: Path) -> None:
    path = save_multilora(_model(0), tmp_path / "a.safetensors", CONFIG)
    only_up = MultiLoRAConfig(
        r=8, n=4, lora_alpha=16, parameter_matched=True, target_modules=("up",)
    )
    with pytest.raises(CheckpointMismatchError, match="not in model.*blocks.0.down"):
        load_multilora(_model(1, only_up), path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"blocks\.0\.up\.multilora_A.*\(4, 2, 12\) in file, \(4, 2, 10\)",
    ):
        load_multilora(_model(1, width=10), path)


def test_load_refuses_non_multilora_unsafe_and_merged(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(plain))
    with pytest.raises(FileFormatError, match="not a spectra MultiLoRA file"):
        load_multilora(_model(1), plain)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"w": torch.zeros(2), "obj": _block(12)}, unsafe)
    with pytest.raises(UnsafeFileError):
        load_multilora(_model(1), unsafe)
    with pytest.raises(FileFormatError):
        load_multilora(_model(1), tmp_path / "missing.safetensors")
    path = save_multilora(_model(0), tmp_path / "a.safetensors", CONFIG)
    merged = _model(1)
    merge_multilora(merged)
    with pytest.raises(RuntimeError, match="unmerge_multilora"):
        load_multilora(merged, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("scaling", ["vector", "scalar"])
def test_spectra_reader_reproduces_delta(
    tmp_path: Path, suffix: str, scaling: str, loop_delta
) -> None:
    config = MultiLoRAConfig(r=3, n=4, lora_alpha=6, scaling=scaling, target_modules=("up", "down"))
    model = _model(0, config)
    path = save_multilora(model, tmp_path / f"a{suffix}", config)
    reader = MultiLoRAReader(path)
    reader64 = MultiLoRAReader(path, options=LoadOptions(dtype=torch.float64))
    assert [m.module for m in reader.modules()] == sorted(multilora_layers(model))
    for module, layer in multilora_layers(model).items():
        update = reader.update(module)
        assert update.factored and update.groups == (3, 3, 3, 3)
        torch.testing.assert_close(
            update.materialize(), layer.get_delta_weight(), rtol=0, atol=1e-6
        )
        torch.testing.assert_close(
            reader64.update(module).materialize(), loop_delta(layer), rtol=1e-12, atol=1e-12
        )
