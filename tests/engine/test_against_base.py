"""Amplification factor and intruder dimensions on hand-built W0 and ΔW."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.engine import amplification_factor, intruder_dimensions
from spectra.errors import CheckpointMismatchError
from spectra.update import ModuleUpdate

F64 = torch.float64


def _eye_col(d: int, i: int) -> torch.Tensor:
    """(d, 1) unit vector e_i."""
    e = torch.zeros(d, 1, dtype=F64)
    e[i] = 1.0
    return e


@pytest.fixture
def w0() -> torch.Tensor:
    """(6, 5) diagonal base weight: W0[i, i] = 10, 5, 2, 1, 0.5."""
    w = torch.zeros(6, 5, dtype=F64)
    w[range(5), range(5)] = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5], dtype=F64)
    return w


@pytest.mark.parametrize("factored", [False, True])
def test_amplification_closed_form(w0, factored):
    # ΔW = 4 e_3 e_3ᵀ + 2 e_4 e_4ᵀ: U = [e_3, e_4], V = [e_3, e_4], Uᵀ W0 V = diag(1, 0.5).
    left = torch.cat([4 * _eye_col(6, 3), 2 * _eye_col(6, 4)], dim=1)  # (6, 2)
    right = torch.cat([_eye_col(5, 3), _eye_col(5, 4)], dim=1).T  # (2, 5)
    if factored:
        upd = ModuleUpdate("m", (6, 5), left=left, right=right)
        got = amplification_factor(upd, w0)  # r defaults to R = 2
    else:
        upd = ModuleUpdate("m", (6, 5), dense=left @ right)
        got = amplification_factor(upd, w0, r=2)
    assert got == pytest.approx(math.sqrt(20 / 1.25), rel=1e-12)


def test_amplification_rank_one_and_edge_cases(w0):
    strong = ModuleUpdate("m", (6, 5), dense=3 * _eye_col(6, 0) @ _eye_col(5, 0).T)
    assert amplification_factor(strong, w0.float(), r=1) == pytest.approx(0.3, rel=1e-6)
    unseen = ModuleUpdate("m", (6, 5), dense=_eye_col(6, 0) @ _eye_col(5, 1).T)  # W0[0, 1] = 0
    assert amplification_factor(unseen, w0, r=1) == math.inf
    zero = ModuleUpdate("m", (6, 5), left=torch.zeros(6, 2), right=torch.ones(2, 5))
    assert amplification_factor(zero, w0) == 0.0
    with pytest.raises(CheckpointMismatchError, match=r"\(5, 6\)"):
        amplification_factor(strong, w0.T)


def _base(orthonormal, out: int = 40, inp: int = 10):
    s0 = torch.arange(inp, 0, -1, dtype=F64)  # 10, 9, ..., 1
    u0, v0 = orthonormal(out, inp, seed=31), orthonormal(inp, inp, seed=32)
    return u0 @ torch.diag(s0) @ v0.T, u0, v0, s0


def test_intruder_new_direction(orthonormal):
    w, u0, v0, s0 = _base(orthonormal)
    # w_new ⊥ col(W0); pair it with W0's weakest right vector so the SVD is in closed form:
    # W0 + ΔW has σ² = 1 + 2500 along v0[:, -1], left vector (u0[:, -1] + 50 w_new)/√2501.
    w_new = torch.linalg.qr(torch.cat([u0, torch.randn(40, 1, dtype=F64)], dim=1))[0][:, -1:]
    delta = ModuleUpdate("m", (40, 10), left=50 * w_new, right=v0[:, -1:].T)
    res = intruder_dimensions(w, delta, k=10, eps=0.5)
    assert res.count == 1 and res.indices == [0] and res.k == 10 and res.eps == 0.5
    assert res.max_cos[0] == pytest.approx(1 / math.sqrt(2501), abs=1e-10)
    assert min(res.max_cos[1:]) == pytest.approx(1.0, abs=1e-10)
    total = float((s0**2).sum()) - 1 + 2501
    assert res.energy_share == pytest.approx(2501 / total, rel=1e-10)


def test_intruder_rescale_only(orthonormal):
    w, u0, v0, s0 = _base(orthonormal)
    delta = ModuleUpdate("m", (40, 10), dense=u0 @ torch.diag(0.5 * s0) @ v0.T)
    res = intruder_dimensions(w, delta, k=10)
    assert res.count == 0 and res.energy_share == 0.0 and res.indices == []
    assert min(res.max_cos) == pytest.approx(1.0, abs=1e-10)


def test_intruder_widens_half_precision_base(orthonormal):
    w, u0, v0, s0 = _base(orthonormal)
    w16 = w.to(torch.bfloat16)
    delta = ModuleUpdate("m", (40, 10), dense=torch.zeros(40, 10))
    res = intruder_dimensions(w16, delta, k=3)
    assert res.count == 0 and res.k == 3 and len(res.max_cos) == 3
    assert min(res.max_cos) > 0.999  # W0 against itself, computed in float32


def test_intruder_checks(orthonormal):
    w = _base(orthonormal)[0]
    with pytest.raises(CheckpointMismatchError):
        intruder_dimensions(w, ModuleUpdate("m", (10, 40), dense=torch.zeros(10, 40)))
    with pytest.raises(ValueError):
        intruder_dimensions(w, ModuleUpdate("m", (40, 10), dense=torch.zeros(40, 10)), k=0)
    bad = torch.zeros(40, 10)
    bad[0, 0] = float("inf")
    res = intruder_dimensions(w, ModuleUpdate("m", (40, 10), dense=bad))
    assert res.nonfinite and math.isnan(res.energy_share)


def test_intruders_with_precomputed_base_vectors_equal_recomputed() -> None:
    from spectra.engine.against_base import base_left_vectors, common_dtype

    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(40, 24, generator=g, dtype=torch.float64)
    upd = ModuleUpdate(
        module="m", shape=(40, 24),
        left=3.0 * torch.randn(40, 2, generator=g, dtype=torch.float64),
        right=torch.randn(2, 24, generator=g, dtype=torch.float64),
    )  # fmt: skip
    fresh = intruder_dimensions(w0, upd, k=6, eps=0.5)
    left = base_left_vectors(w0, common_dtype(w0, upd))
    assert left is not None and left.shape == (40, 24)
    cached = intruder_dimensions(w0, upd, k=6, eps=0.5, base_left=left)
    assert cached.count == fresh.count and cached.max_cos == fresh.max_cos
    assert cached.energy_share == fresh.energy_share


def test_amplification_reuses_a_precomputed_spectrum() -> None:
    from spectra.engine.svd import spectrum

    g = torch.Generator().manual_seed(4)
    w0 = torch.randn(30, 20, generator=g, dtype=torch.float64)
    upd = ModuleUpdate(
        module="m", shape=(30, 20), dense=torch.randn(30, 20, generator=g, dtype=torch.float64)
    )
    fresh = amplification_factor(upd, w0, 5)
    reused = amplification_factor(upd, w0, 5, spec=spectrum(upd, vectors=8))  # more than r
    assert reused == pytest.approx(fresh, rel=1e-12)
    too_few = amplification_factor(upd, w0, 5, spec=spectrum(upd, vectors=2))  # recomputed
    assert too_few == pytest.approx(fresh, rel=1e-12)
