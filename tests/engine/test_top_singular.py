"""σ₁ by block Lanczos against float64 LAPACK singular values."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.engine.top_singular import top_singular_value
from tests.models import tiny_bert


def _sigma1(w: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(w.double())[0])


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_no_gap_at_the_top(shape, dtype):
    # Gaussian matrices are the hard case: the top singular values crowd together
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    got, ref = top_singular_value(w), _sigma1(w)
    assert got <= ref * (1 + 1e-6)  # a Ritz value: a lower bound
    assert got == pytest.approx(ref, rel=1e-3)


def test_closed_form_spectrum(orthonormal):
    s = torch.tensor([7.0, 6.999, 3.0, 1.0, 0.5], dtype=torch.float64)
    w = orthonormal(80, 5, seed=3) @ torch.diag(s) @ orthonormal(40, 5, seed=4).T  # rank 5
    assert top_singular_value(w) == pytest.approx(7.0, rel=1e-9)  # Krylov space exhausted


def test_trained_shape_weights_of_a_real_model():
    torch.manual_seed(0)
    model = tiny_bert(hidden_size=64, intermediate_size=128, num_hidden_layers=1)
    for name, p in model.named_parameters():
        if p.ndim == 2:
            assert top_singular_value(p.detach()) == pytest.approx(_sigma1(p.detach()), rel=1e-4), (
                name
            )


def test_edge_cases():
    assert top_singular_value(torch.zeros(30, 20)) == 0.0
    assert top_singular_value(torch.zeros(0, 5)) == 0.0
    bad = torch.ones(10, 10)
    bad[3, 4] = float("nan")
    assert math.isnan(top_singular_value(bad))
    tiny = torch.tensor([[3.0, 0.0], [0.0, -4.0]], dtype=torch.float64)
    assert top_singular_value(tiny) == pytest.approx(4.0, rel=1e-12)
    assert top_singular_value(torch.ones(1, 50)) == pytest.approx(math.sqrt(50), rel=1e-6)
    with pytest.raises(ValueError):
        top_singular_value(torch.ones(3))
    with pytest.raises(ValueError):
        top_singular_value(torch.ones(3, 3), tol=0.0)


def test_reproducible():
    w = torch.randn(120, 90, generator=torch.Generator().manual_seed(2))
    assert top_singular_value(w) == top_singular_value(w)
