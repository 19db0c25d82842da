"""Shared helpers for the MultiLoRA tests: a per-module Python-loop reference of the layer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from spectra.multilora import MultiLoRALinear


def _loop_delta(layer: MultiLoRALinear) -> torch.Tensor:
    """(α/r_m) Σ_i diag(s_i) B_i A_i in float64, one module at a time: the method written out."""
    c = layer.config
    a = layer.multilora_A.detach().double()  # (n, r_m, in)
    b = layer.multilora_B.detach().double()  # (n, out, r_m)
    s = layer.multilora_scaling.detach().double()  # (n, out) or (n,)
    delta = torch.zeros(b.shape[1], a.shape[2], dtype=torch.float64)
    for i in range(c.n):
        s_i = s[i][:, None] if s.ndim == 2 else s[i]  # (out, 1) or scalar
        delta += c.scale * s_i * (b[i] @ a[i])
    return delta


def _loop_forward(layer: MultiLoRALinear, x: torch.Tensor) -> torch.Tensor:
    """W0 x + bias + Σ_i (α/r_m) s_i ⊙ B_i A_i x in float64 (dropout off), x: (..., in)."""
    w = layer.base_layer.weight.detach().double()
    bias = layer.base_layer.bias
    x = x.double()
    y = x @ w.T + (0 if bias is None else bias.detach().double())
    c = layer.config
    s = layer.multilora_scaling.detach().double()
    for i in range(c.n):
        a_i = layer.multilora_A[i].detach().double()  # (r_m, in)
        b_i = layer.multilora_B[i].detach().double()  # (out, r_m)
        s_i = s[i] if s.ndim == 2 else s[i].expand(b_i.shape[0])  # (out,)
        y = y + c.scale * s_i * ((x @ a_i.T) @ b_i.T)
    return y


@pytest.fixture
def loop_delta() -> Callable[[MultiLoRALinear], torch.Tensor]:
    return _loop_delta


@pytest.fixture
def loop_forward() -> Callable[[MultiLoRALinear, torch.Tensor], torch.Tensor]:
    return _loop_forward


def randomize_scaling(layer: MultiLoRALinear, seed: int = 1) -> None:
    """Give s_i nonzero values (they start at zero, which would hide every bug in B and A)."""
    g = torch.Generator().manual_seed(seed)
    s = layer.multilora_scaling
    with torch.no_grad():
        s.copy_(torch.randn(s.shape, generator=g, dtype=torch.float64).to(s.dtype))


@pytest.fixture
def randomize() -> Callable[[MultiLoRALinear, int], None]:
    return randomize_scaling
