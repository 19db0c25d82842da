"""Builders for the engine tests: orthonormal bases and matrices with chosen singular values.

Everything is built in float64 from a seeded generator, then cast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

Orthonormal = Callable[..., torch.Tensor]
WithSpectrum = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _orthonormal(d: int, k: int, *, seed: int) -> torch.Tensor:
    """(d, k) float64 with orthonormal columns (Q of a seeded Gaussian)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    return q


def _with_spectrum(
    s: Sequence[float], out: int, inp: int, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = U diag(s) Vᵀ, float64, with U: (out, k), V: (in, k), k = len(s) ≤ min(out, in)."""
    k = len(s)
    u = _orthonormal(out, k, seed=seed)
    v = _orthonormal(inp, k, seed=seed + 1)
    a = u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T
    return a, u, v


@pytest.fixture
def orthonormal() -> Orthonormal:
    return _orthonormal


@pytest.fixture
def with_spectrum() -> WithSpectrum:
    return _with_spectrum
