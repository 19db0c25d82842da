"""Randomized top-k SVD (Halko et al.) against the exact one, on matrices built from chosen
singular values; and the --svd randomized route through analyze."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.analysis import AnalysisOptions, analyze
from spectra.engine.randomized import randomized_svd, truncated_metrics
from spectra.engine.subspace import phi_grid

from .conftest import Synthetic


def _built(out: int, inp: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(σ) Vᵀ in float64 with random orthonormal U: (out, m), V: (in, m)."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out, len(sigma), generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(inp, len(sigma), generator=gen, dtype=torch.float64))
    return (u * sigma) @ v.T


DECAYING = 0.8 ** torch.arange(200, dtype=torch.float64)  # σ_i = 0.8^i


def _rel_err(values: torch.Tensor, exact: torch.Tensor) -> float:
    return float(((values.double() - exact).abs() / exact).max())


def test_decaying_spectrum_top_k_is_close_to_exact() -> None:
    a = _built(300, 200, DECAYING)  # (300, 200)
    # float64, p = 10, q = 2: error ~ (σ_21/σ_10)^5 per Halko et al.; measured 2e-12
    s, u, v = randomized_svd(a, 10, oversample=10, power_iters=2)
    assert s.shape == (10,) and u is not None and v is not None
    assert _rel_err(s, DECAYING[:10]) < 1e-9
    # the top-10 subspaces are the exact ones: φ(10, 10) = 1 on both sides
    u_ex, _, vh_ex = torch.linalg.svd(a)
    assert float(phi_grid(u, u_ex[:, :10])[-1, -1]) > 1 - 1e-9
    assert float(phi_grid(v, vh_ex[:10].T)[-1, -1]) > 1 - 1e-9
    # float32 input: computed in float32, error at float32 level (measured 5e-7)
    s32, _, _ = randomized_svd(a.float(), 10, oversample=10, power_iters=2)
    assert s32.dtype == torch.float32 and _rel_err(s32, DECAYING[:10]) < 1e-5


def test_power_iterations_are_what_make_it_accurate() -> None:
    a = _built(300, 200, DECAYING)
    err0 = _rel_err(randomized_svd(a, 10, oversample=10, power_iters=0)[0], DECAYING[:10])
    err2 = _rel_err(randomized_svd(a, 10, oversample=10, power_iters=2)[0], DECAYING[:10])
    assert err0 > 1e-4 and err2 < err0 * 1e-6  # measured 3.6e-3 vs 2.2e-12


def test_flat_spectrum_is_approximate_from_below_and_reproducible() -> None:
    a = torch.randn(300, 200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = torch.linalg.svdvals(a)[:16]
    s, _, _ = randomized_svd(a, 16, seed=3)
    # σ_j(Qᵀ A) ≤ σ_j(A): never above the exact value; q = 4 on a flat spectrum: ~2 %
    assert bool((s <= exact * (1 + 1e-12)).all())
    assert 1e-4 < _rel_err(s, exact) < 0.05
    assert torch.equal(s, randomized_svd(a, 16, seed=3)[0])  # seeded
    assert not torch.equal(s, randomized_svd(a, 16, seed=4)[0])


def test_nonfinite_gives_nan_and_no_vectors() -> None:
    a = torch.ones(20, 10)
    a[3, 4] = float("inf")
    s, u, v = randomized_svd(a, 4)
    assert s.shape == (4,) and bool(s.isnan().all()) and u is None and v is None


def test_truncated_metrics_closed_form() -> None:
    # ΔW with σ = (3, 2, 1, 1): only the top 3 known, ‖ΔW‖_F² = 9 + 4 + 1 + 1 = 15
    m = truncated_metrics(torch.tensor([3.0, 2.0, 1.0]), math.sqrt(15.0), ks=(1, 2, 4))
    assert m["top1_energy"] == pytest.approx(9 / 15)
    assert m["top2_energy"] == pytest.approx(13 / 15)
    assert m["top4_energy"] is None  # beyond the computed values: unknown, not guessed
    assert m["topr_energy"] == pytest.approx(14 / 15) and m["r_for_topr"] == 3
    assert m["stable_rank"] == pytest.approx(15 / 9)
    assert m["frobenius_norm"] == pytest.approx(math.sqrt(15)) and m["spectral_norm"] == 3.0
    assert m["effective_rank"] is None and m["spectral_entropy"] is None
    assert m["numerical_rank"] is None and m["nonfinite"] is False
    zero = truncated_metrics(torch.zeros(3), 0.0)
    assert zero["stable_rank"] == 0.0 and zero["top1_energy"] is None


def test_analyze_randomized_rows_match_exact_top_k(synthetic: Synthetic) -> None:
    kw = {"top_k": 4, "against_base": False}
    exact = analyze(synthetic.base, [synthetic.full, synthetic.lora], options=AnalysisOptions(**kw))
    rand = analyze(
        synthetic.base, [synthetic.full, synthetic.lora],
        options=AnalysisOptions(svd="randomized", **kw),
    )  # fmt: skip
    assert rand["settings"]["svd"] == "randomized" and rand["settings"]["power_iters"] == 4
    pairs = list(zip(exact["modules"], rand["modules"], strict=True))
    for ex, rd in pairs:
        assert ex["module"] == rd["module"] and ex["label"] == rd["label"]
        if rd["kind"] == "lora":  # factored updates stay exact
            assert rd["truncated"] is False and rd["singular_values"] == ex["singular_values"]
            continue
        assert rd["truncated"] is True and len(rd["singular_values"]) == 4
        # the generated ΔW has 8 dominant directions over noise: the top 4 are well separated
        assert (
            _rel_err(
                torch.tensor(rd["singular_values"]),
                torch.tensor(ex["singular_values"][:4]).double(),
            )
            < 1e-3
        )
        assert rd["metrics"]["top1_energy"] == pytest.approx(ex["metrics"]["top1_energy"], rel=2e-3)
        assert rd["metrics"]["effective_rank"] is None
    assert len(rand["similarity"]) == len(exact["similarity"])
