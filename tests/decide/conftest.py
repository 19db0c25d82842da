"""Tiny real BERT checkpoints for the decision commands: a base, full fine-tunes of it, and
real PEFT adapters; every file written by transformers / PEFT themselves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import BertModel

from tests.cli.conftest import adapters, ckpts  # noqa: F401  (re-exported fixtures)
from tests.models import tiny_bert


@dataclass(frozen=True)
class FullPair:
    """A base model directory, a full fine-tune of it, and both state dicts."""

    base: Path
    tuned: Path
    base_sd: dict[str, torch.Tensor]
    tuned_sd: dict[str, torch.Tensor]


def fine_tune(model: nn.Module, *, seed: int, weights_only: bool, scale: float = 0.05) -> None:
    """Add seeded noise to every parameter (matrices only when ``weights_only``): a stand-in
    for a full fine-tune whose ΔW is dense and full rank."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if weights_only and p.ndim < 2:
                continue
            p.add_(scale * torch.randn(p.shape, generator=g))


def save_pair(root: Path, *, weights_only: bool, layers: int = 1) -> FullPair:
    """Save a tiny BERT and a full fine-tune of it with ``save_pretrained`` (config.json +
    model.safetensors), under ``root/base`` and ``root/tuned``."""
    torch.manual_seed(0)
    base = tiny_bert(num_hidden_layers=layers)
    base.save_pretrained(root / "base")
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    fine_tune(base, seed=1, weights_only=weights_only)
    base.save_pretrained(root / "tuned")
    return FullPair(root / "base", root / "tuned", base_sd, dict(base.state_dict()))


@pytest.fixture(scope="module")
def weights_pair(tmp_path_factory: pytest.TempPathFactory) -> FullPair:
    """Only the matrices changed (biases and norms untouched)."""
    return save_pair(tmp_path_factory.mktemp("weights_pair"), weights_only=True)


@pytest.fixture(scope="module")
def all_pair(tmp_path_factory: pytest.TempPathFactory) -> FullPair:
    """Every parameter changed: matrices, biases, LayerNorms."""
    return save_pair(tmp_path_factory.mktemp("all_pair"), weights_only=False)


def best_rank(delta: torch.Tensor, r: int) -> torch.Tensor:
    """The float64 reference: the truncated SVD of ``delta`` (Eckart–Young)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


def peft_merge(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Load BASE with transformers, the adapter with PEFT, and return merge_and_unload()'s
    state dict."""
    model = BertModel.from_pretrained(str(base_dir))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def randomize_lora(
    model: nn.Module,
    seed: int = 1,
    scale: float = 0.3,
    *,
    marker: str = "lora_",
    dtype: torch.dtype = torch.float64,
) -> None:
    """Seeded values (``scale`` · N(0, 1), drawn in ``dtype``) for every parameter whose name
    holds ``marker`` (``"lora_"``: PEFT's factors; ``"multilora"``: A_i, B_i, s_i), so that
    ΔW ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if marker in name:
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=dtype).to(p.dtype))
