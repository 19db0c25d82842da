"""φ grid, principal angles, distances and MultiLoRA group similarity on built subspaces."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.engine import subspace
from spectra.update import ModuleUpdate

F64 = torch.float64


def _rotated_pair(orthonormal, thetas: list[float], d: int = 20):
    """U1 = Q[:, :p], U2[:, k] = cos θ_k Q[:, k] + sin θ_k Q[:, p+k]: principal angles θ."""
    p = len(thetas)
    q = orthonormal(d, 2 * p, seed=21)
    t = torch.tensor(thetas, dtype=F64)
    return q[:, :p], q[:, :p] * torch.cos(t) + q[:, p:] * torch.sin(t)


def test_identical_subspaces_give_one(orthonormal):
    u = orthonormal(30, 6, seed=1)
    assert torch.allclose(subspace.phi_grid(u, u), torch.ones(6, 6, dtype=F64), atol=1e-12)


def test_nested_subspaces_follow_min_rule(orthonormal):
    q = orthonormal(30, 8, seed=2)
    u1, u2 = q[:, :5], torch.cat([q[:, :3], q[:, 5:8]], dim=1)  # share exactly span(q[:, :3])
    grid = subspace.phi_grid(u1, u2)
    assert grid[2, 2] == pytest.approx(1.0, abs=1e-12)  # φ(3, 3): same span
    assert grid[4, 2] == pytest.approx(1.0, abs=1e-12)  # φ(5, 3): span(U2[:, :3]) ⊂ span(U1)
    assert grid[2, 5] == pytest.approx(1.0, abs=1e-12)  # φ(3, 6): span(U1[:, :3]) ⊂ span(U2)
    assert grid[4, 5] == pytest.approx(3 / 5, abs=1e-12)  # 3 shared dims / min(5, 6)
    assert grid[4, 4] == pytest.approx(3 / 5, abs=1e-12)


def test_orthogonal_subspaces_give_zero(orthonormal):
    q = orthonormal(30, 9, seed=3)
    assert float(subspace.phi_grid(q[:, :4], q[:, 4:]).abs().max()) < 1e-12


def test_known_angles(orthonormal):
    thetas = [0.1, 0.4, 0.7, 1.2]
    u1, u2 = _rotated_pair(orthonormal, thetas)
    cos2 = [math.cos(t) ** 2 for t in thetas]
    assert subspace.phi_grid(u1, u2)[-1, -1] == pytest.approx(sum(cos2) / 4, abs=1e-12)
    assert subspace.phi_grid(u1, u2)[0, 0] == pytest.approx(cos2[0], abs=1e-12)
    assert torch.allclose(
        subspace.principal_angles(u1, u2), torch.tensor(thetas, dtype=F64), atol=1e-10
    )
    assert subspace.grassmann_distance(u1, u2) == pytest.approx(
        math.sqrt(sum(t * t for t in thetas)), abs=1e-10
    )
    assert subspace.projection_distance(u1, u2) == pytest.approx(
        math.sqrt(4 - sum(cos2)), abs=1e-10
    )


def test_angles_are_ascending_and_clamped(orthonormal):
    u1, u2 = _rotated_pair(orthonormal, [1.0, 0.0, 0.5])
    theta = subspace.principal_angles(u1, u2)
    assert torch.all(theta[1:] >= theta[:-1])
    assert not torch.isnan(theta).any() and float(theta[0]) < 1e-7


def test_vectorised_grid_equals_loop(orthonormal):
    u1, u2 = orthonormal(40, 7, seed=4), orthonormal(40, 5, seed=5).float()
    assert torch.allclose(
        subspace.phi_grid(u1, u2), subspace.phi_grid_loop(u1, u2), atol=1e-12, rtol=0
    )


def test_input_checks(orthonormal):
    with pytest.raises(ValueError, match=r"\(30, 3\).*\(20, 3\)"):
        subspace.phi_grid(orthonormal(30, 3, seed=6), orthonormal(20, 3, seed=7))
    with pytest.raises(ValueError, match="orthonormal"):
        subspace.phi_grid(2 * orthonormal(30, 3, seed=6), orthonormal(30, 3, seed=7))
    with pytest.raises(ValueError, match="2-D"):
        subspace.principal_angles(torch.ones(3), torch.ones(3, 1))


def _multilora(blocks_b, blocks_a) -> ModuleUpdate:
    left, right = torch.cat(blocks_b, dim=1), torch.cat(blocks_a, dim=0)
    groups = tuple(b.shape[1] for b in blocks_b)
    return ModuleUpdate("m", (left.shape[0], right.shape[1]), left=left, right=right, groups=groups)


def test_group_similarity_identical_blocks():
    gen = torch.Generator().manual_seed(8)
    b, a = torch.randn(24, 3, generator=gen), torch.randn(3, 16, generator=gen)
    left_phi, right_phi = subspace.group_similarity(_multilora([b, 2 * b, b], [a, a, -a]))
    assert torch.allclose(left_phi, torch.ones(3, 3, dtype=F64), atol=1e-5)
    assert torch.allclose(right_phi, torch.ones(3, 3, dtype=F64), atol=1e-5)


def test_group_similarity_orthogonal_blocks(orthonormal):
    qb, qa = orthonormal(24, 4, seed=9), orthonormal(16, 4, seed=10)
    upd = _multilora([qb[:, :2] * 3, qb[:, 2:]], [qa[:, :2].T, qa[:, 2:].T * 0.5])
    left_phi, right_phi = subspace.group_similarity(upd)
    for grid in (left_phi, right_phi):
        assert torch.allclose(grid, torch.eye(2, dtype=F64), atol=1e-10)


def test_group_similarity_partial_overlap(orthonormal):
    qb, qa = orthonormal(24, 3, seed=11), orthonormal(16, 4, seed=12)
    # Left blocks share one of two directions -> φ = 1/2; right blocks are orthogonal -> 0.
    upd = _multilora([qb[:, :2], qb[:, 1:]], [qa[:, :2].T, qa[:, 2:].T])
    left_phi, right_phi = subspace.group_similarity(upd)
    assert left_phi[0, 1] == pytest.approx(0.5, abs=1e-10)
    assert right_phi[0, 1] == pytest.approx(0.0, abs=1e-10)


def test_group_similarity_zero_scaling_and_rank_deficient():
    gen = torch.Generator().manual_seed(13)
    b, a = torch.randn(24, 2, generator=gen), torch.randn(2, 16, generator=gen)
    deficient = torch.cat([b[:, :1], b[:, :1]], dim=1)  # rank 1 inside a rank-2 slot
    upd = _multilora([b, torch.zeros(24, 2), deficient], [a, a, a])
    left_phi, right_phi = subspace.group_similarity(upd)
    assert torch.isnan(left_phi[1]).all() and torch.isnan(right_phi[:, 1]).all()
    # The rank-1 module lies inside module 0's span: φ(2, 1) = 1 / min(2, 1) = 1.
    assert left_phi[0, 2] == pytest.approx(1.0, abs=1e-5)
    assert left_phi[2, 2] == pytest.approx(1.0, abs=1e-6)


def test_group_similarity_needs_groups():
    with pytest.raises(ValueError, match="groups"):
        subspace.group_similarity(ModuleUpdate("m", (3, 3), dense=torch.eye(3)))
