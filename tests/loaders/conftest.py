"""Shared by the adapter-format tests: a tiny model with every layer kind and real PEFT
adapters with their merge_and_unload() oracle (the CLI runner run_cli is in tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn


class Toy(nn.Module):
    """Embedding, two Linear layers, a conv and a head: small enough for exact checks."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.lin1 = nn.Linear(6, 5)
        self.lin2 = nn.Linear(5, 7)
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(7, 3)


@dataclass(frozen=True)
class PeftAdapter:
    """A saved PEFT adapter, its base checkpoint, and ΔW per module from PEFT itself."""

    adapter: Path
    base: Path
    oracle: dict[str, torch.Tensor]  # module → merge_and_unload() weight − base weight, stored


def randomize_adapter(model: nn.Module, seed: int = 1) -> None:
    """Every adapter parameter (LoRA factors, DoRA magnitudes, modules_to_save copies) gets
    seeded normals, so that ΔW ≠ 0 and each part of the formula is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def make_peft_adapter(model: nn.Module, config: object, out: Path) -> PeftAdapter:
    """Wrap ``model`` with real PEFT, randomize, save; the oracle is PEFT's own merge."""
    from peft import get_peft_model

    base_sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(base_sd, str(out.parent / f"{out.name}_base.safetensors"))
    peft_model = get_peft_model(model, config)
    randomize_adapter(peft_model)
    peft_model.save_pretrained(str(out))
    merged = peft_model.merge_and_unload().state_dict()
    oracle = {
        k.removesuffix(".weight"): merged[k] - base_sd[k]
        for k in base_sd
        if k.endswith(".weight") and not torch.equal(merged[k], base_sd[k])
    }
    return PeftAdapter(out, out.parent / f"{out.name}_base.safetensors", oracle)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖_F / ‖want‖_F after flattening ``want`` like ΔW (conv kernels)."""
    want = want.reshape(want.shape[0], -1).to(got.dtype)
    assert got.shape == want.shape
    return float((got - want).norm() / want.norm())


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy().double()
