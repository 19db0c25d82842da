"""The real PEFT library as oracle: MultiLoRA with n = 1 and s = 1 is a LoRA; parameter counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spectra.multilora import (
    MultiLoRAConfig,
    inject_multilora,
    mark_only_multilora_trainable,
    merge_multilora,
    multilora_layers,
)
from tests.models import Linears

peft = pytest.importorskip("peft")
TARGETS = ("up", "down")


def _mlp(width: int = 24, hidden: int = 40) -> nn.Module:
    return Linears(up=(width, hidden), down=(hidden, width))


def _peft(model: nn.Module, r: int, alpha: float) -> nn.Module:
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(TARGETS), lora_dropout=0.0)
    return peft.get_peft_model(model, config)


def _pair(n: int, r: int, alpha: float, scaling: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(base, MultiLoRA model, PEFT LoRA model of rank n·r on the same base) with the same ΔW.

    PEFT gets A = [A_1; …; A_n], B = [s_1 ⊙ B_1, …, s_n ⊙ B_n] and α_peft = n·α so that its
    α_peft / (n·r) equals MultiLoRA's α / r.
    """
    base = _mlp()
    ours, theirs = copy.deepcopy(base), _peft(copy.deepcopy(base), n * r, n * alpha)
    inject_multilora(
        ours, MultiLoRAConfig(r=r, n=n, lora_alpha=alpha, scaling=scaling, target_modules=TARGETS)
    )
    with torch.no_grad():
        for name, layer in multilora_layers(ours).items():
            s = layer.multilora_scaling
            s.copy_(torch.ones_like(s) if n == 1 else torch.randn_like(s))
            s_col = s[:, :, None] if s.ndim == 2 else s[:, None, None]  # (n, out, 1) / (n, 1, 1)
            b = (s_col * layer.multilora_B).permute(1, 0, 2).reshape(layer.multilora_B.shape[1], -1)
            lora = theirs.base_model.model.get_submodule(name)
            lora.lora_A["default"].weight.copy_(layer.multilora_A.reshape(n * r, -1))
            lora.lora_B["default"].weight.copy_(b)
    return base, ours, theirs


@pytest.mark.parametrize(
    ("n", "r", "scaling"), [(1, 4, "scalar"), (3, 2, "vector"), (2, 3, "scalar")]
)
def test_matches_peft_lora_outputs_delta_and_merged_weights(n: int, r: int, scaling: str) -> None:
    base, ours, theirs = _pair(n, r, alpha=8.0, scaling=scaling)
    x = torch.randn(6, 24)
    y_ours, y_theirs = ours(x), theirs(x)
    assert (y_ours - base(x)).abs().max() > 0.1  # the adapters do change the output
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-6)
    for name, layer in multilora_layers(ours).items():
        lora = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(
            layer.get_delta_weight(), lora.get_delta_weight("default"), rtol=1e-5, atol=1e-7
        )
    merge_multilora(ours)
    theirs.merge_adapter()
    for name, layer in multilora_layers(ours).items():
        lora = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(
            layer.base_layer.weight, lora.base_layer.weight, rtol=1e-6, atol=1e-6
        )
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scaling", ["vector", "scalar"])
def test_parameter_matched_counts_equal_rank_r_lora(scaling: str) -> None:
    base = _mlp()
    theirs = _peft(copy.deepcopy(base), r=8, alpha=16)
    peft_count = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    ours = copy.deepcopy(base)
    config = MultiLoRAConfig(
        r=8, n=4, parameter_matched=True, scaling=scaling, target_modules=TARGETS
    )
    inject_multilora(ours, config)
    layers = multilora_layers(ours).values()
    ab_count = sum(m.multilora_A.numel() + m.multilora_B.numel() for m in layers)
    s_count = sum(m.multilora_scaling.numel() for m in layers)
    assert peft_count == 8 * (24 + 40) + 8 * (40 + 24)
    assert ab_count == peft_count
    assert s_count == (4 * (40 + 24) if scaling == "vector" else 4 * 2)
    assert mark_only_multilora_trainable(ours) == peft_count + s_count
