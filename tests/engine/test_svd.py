"""Exact spectra: dense and factored SVD against chosen singular values and float64 references."""

from __future__ import annotations

import pytest
import torch

from spectra.engine import Spectrum, spectrum, svd_dense, svd_factored
from spectra.engine import svd as svd_module
from spectra.engine.device import resolve_device
from spectra.errors import OptionError
from spectra.update import ModuleUpdate

CHOSEN = [9.0, 5.0, 2.5, 1.0, 0.25]
# Absolute tolerance on σ relative to σ_1, per compute dtype (backward-stable SVD: ~eps·σ_1).
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(40, 25), (25, 40)])
@pytest.mark.parametrize("backend", ["auto", "gram", "torch", "scipy"])
def test_dense_recovers_chosen_values(with_spectrum, dtype, shape, backend):
    a, _, _ = with_spectrum(CHOSEN, *shape, seed=1)
    s, u, v = svd_dense(a.to(dtype), backend=backend)
    expected = torch.tensor(CHOSEN + [0.0] * (min(shape) - len(CHOSEN)), dtype=torch.float64)
    assert s.dtype == dtype and u is None and v is None
    assert len(s) == min(shape)
    assert _rel_err(s, expected) < REL_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factored_recovers_chosen_values(with_spectrum, dtype):
    _, u, v = with_spectrum(CHOSEN, 50, 30, seed=2)
    left = (u * torch.tensor(CHOSEN, dtype=torch.float64)).to(dtype)  # (50, 5)
    right = v.T.to(dtype)  # (5, 30)
    spec = spectrum(ModuleUpdate("m", (50, 30), left=left, right=right))
    assert spec.values.dtype == dtype
    assert _rel_err(spec.values, torch.tensor(CHOSEN)) < REL_TOL[dtype]
    assert (spec.full_size, spec.structural_zeros) == (30, 25)


@pytest.mark.parametrize(
    ("out", "inp", "inner"),
    [(64, 48, 8), (48, 64, 8), (30, 20, 48), (20, 30, 48), (33, 17, 1), (17, 17, 17)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factored_equals_dense(out, inp, inner, dtype):
    gen = torch.Generator().manual_seed(out * inp + inner)
    left = torch.randn(out, inner, generator=gen, dtype=dtype)
    right = torch.randn(inner, inp, generator=gen, dtype=dtype)
    ref = torch.linalg.svdvals(left.double() @ right.double())  # (min(out, in),) float64
    s, _, _ = svd_factored(left, right)
    m = min(out, inp, inner)
    assert len(s) == m
    assert _rel_err(s, ref[:m]) < REL_TOL[dtype]
    if m < len(ref):  # the rest are truly structural zeros
        assert float(ref[m:].abs().max()) < 1e-12 * float(ref[0])


def test_structural_zeros_and_full():
    gen = torch.Generator().manual_seed(3)
    left, right = torch.randn(64, 8, generator=gen), torch.randn(8, 48, generator=gen)
    spec = spectrum(ModuleUpdate("m", (64, 48), left=left, right=right))
    full = spec.full()
    assert (len(spec.values), spec.structural_zeros, spec.full_size) == (8, 40, 48)
    assert full.shape == (48,) and torch.equal(full[8:], torch.zeros(40))
    assert torch.equal(full[:8], spec.values)
    wide = spectrum(
        ModuleUpdate("m", (20, 10), left=torch.randn(20, 16), right=torch.randn(16, 10))
    )
    assert (len(wide.values), wide.structural_zeros) == (10, 0)


def test_dense_spectrum_has_no_structural_zeros(with_spectrum):
    a, _, _ = with_spectrum([3.0, 1.0], 12, 9, seed=4)
    spec = spectrum(ModuleUpdate("m", (12, 9), dense=a))
    assert (len(spec.values), spec.structural_zeros, spec.shape) == (9, 0, (12, 9))
    assert float(spec.values[2:].abs().max()) < 1e-12


@pytest.mark.parametrize("shape", [(40, 30), (30, 40)])  # tall, and wide (computed on ΔWᵀ)
@pytest.mark.parametrize("factored", [False, True])
def test_top_vectors_match_chosen_ones(with_spectrum, factored, shape):
    a, u, v = with_spectrum(CHOSEN, *shape, seed=5)
    if factored:
        upd = ModuleUpdate(
            "m", shape, left=u * torch.tensor(CHOSEN, dtype=torch.float64), right=v.T
        )
    else:
        upd = ModuleUpdate("m", shape, dense=a)
    spec = spectrum(upd, vectors=3)
    assert spec.U is not None and spec.V is not None
    assert spec.U.shape == (shape[0], 3) and spec.V.shape == (shape[1], 3)
    # Distinct singular values: each vector is the chosen one up to sign.
    assert torch.allclose(
        (spec.U.T @ u[:, :3]).abs(), torch.eye(3, dtype=torch.float64), atol=1e-10
    )
    assert torch.allclose(
        (spec.V.T @ v[:, :3]).abs(), torch.eye(3, dtype=torch.float64), atol=1e-10
    )
    # The signs pair up: Uᵀ ΔW V = diag(σ_1..3).
    assert torch.allclose(
        spec.U.T @ a @ spec.V, torch.diag(torch.tensor(CHOSEN[:3])).double(), atol=1e-10
    )


def test_vectors_are_clipped_to_rank():
    gen = torch.Generator().manual_seed(6)
    s, u, v = svd_factored(
        torch.randn(20, 4, generator=gen), torch.randn(4, 10, generator=gen), vectors=99
    )
    assert u is not None and v is not None
    assert u.shape == (20, 4) and v.shape == (10, 4) and len(s) == 4


def test_zero_inner_rank():
    upd = ModuleUpdate("m", (7, 5), left=torch.zeros(7, 0), right=torch.zeros(0, 5))
    spec = spectrum(upd, vectors=2)
    assert len(spec.values) == 0 and spec.structural_zeros == 5
    assert spec.U is not None and spec.U.shape == (7, 0)
    assert torch.equal(spec.full(), torch.zeros(5))


@pytest.mark.parametrize("factored", [False, True])
def test_all_zero_update(factored):
    if factored:
        upd = ModuleUpdate("m", (9, 6), left=torch.zeros(9, 3), right=torch.randn(3, 6))
    else:
        upd = ModuleUpdate("m", (9, 6), dense=torch.zeros(9, 6))
    spec = spectrum(upd, vectors=2)
    assert spec.finite and float(spec.values.abs().max()) == 0.0


@pytest.mark.parametrize("factored", [False, True])
def test_nonfinite_update_gives_nan_values(factored):
    bad = torch.ones(6, 4)
    bad[1, 2] = float("nan")
    if factored:
        upd = ModuleUpdate("m", (6, 5), left=bad, right=torch.ones(4, 5))
    else:
        upd = ModuleUpdate("m", (6, 4), dense=bad)
    spec = spectrum(upd, vectors=2)
    assert not spec.finite and spec.U is None
    assert len(spec.values) == 4 and bool(torch.isnan(spec.values).all())


def test_half_precision_is_widened(with_spectrum):
    a, _, _ = with_spectrum([4.0, 2.0, 1.0], 16, 12, seed=7)
    spec = spectrum(ModuleUpdate("m", (16, 12), dense=a.to(torch.bfloat16)))
    ref = torch.linalg.svdvals(a.to(torch.bfloat16).double())  # exact σ of the stored bf16 matrix
    assert spec.values.dtype == torch.float32
    assert _rel_err(spec.values, ref) < 1e-5


@pytest.mark.parametrize("backend", ["auto", "gram", "torch", "scipy"])
def test_backends_leave_input_untouched(with_spectrum, backend):
    a = with_spectrum(CHOSEN, 20, 30, seed=8)[0].float()
    before = a.clone()
    svd_dense(a, backend=backend)
    assert torch.equal(a, before)


@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
def test_gram_route_beats_float32_gesdd_against_float64(with_spectrum, shape):
    """The float32 route through the float64 Gram matrix, on σ spread over 8 decades: at least
    as accurate as float32 gesdd everywhere (the reason it is the CPU default), and within
    its stated error bound n·ε₆₄·σ₁²/σ_i wherever that bound is below 1."""
    chosen = torch.logspace(0, -8, min(shape), dtype=torch.float64).tolist()
    a = with_spectrum(chosen, *shape, seed=11)[0].float()  # the float32 data a user has
    ref = torch.linalg.svdvals(a.double())  # exact σ of that float32 matrix
    gram = svd_dense(a, backend="gram")[0].double()
    gesdd = svd_dense(a, backend="torch")[0].double()
    err_gram, err_gesdd = (float((x - ref).abs().max() / ref[0]) for x in (gram, gesdd))
    assert err_gram <= err_gesdd and err_gram < 1e-7
    n, eps64 = min(shape), torch.finfo(torch.float64).eps
    bound = n * eps64 * ref[0] ** 2 / ref  # absolute error bound of each σ_i
    ok = bound < 1e-2 * ref  # σ_i well above the floor
    # relative to σ_i: the bound, plus float32 rounding of the returned value
    assert bool(((gram - ref).abs()[ok] <= bound[ok] + 2e-7 * ref[ok]).all())


def test_gram_blocks_sum_to_the_whole(with_spectrum):
    from spectra.engine.svd import _svdvals_gram

    a = with_spectrum(CHOSEN, 50, 20, seed=12)[0].float()
    whole = _svdvals_gram(a, block_rows=1000)
    for rows in (1, 7, 49):
        assert _rel_err(_svdvals_gram(a, block_rows=rows), whole) < 1e-7
        assert _rel_err(_svdvals_gram(a.T, block_rows=rows), whole) < 1e-7


def test_spectrum_checks_consistency():
    with pytest.raises(ValueError, match="full_size"):
        Spectrum(values=torch.ones(3), full_size=5, structural_zeros=1)


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(OptionError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(OptionError, match="not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="no usable CUDA"):
            resolve_device("cuda")
        with pytest.raises(OptionError):
            spectrum(ModuleUpdate("m", (3, 3), dense=torch.eye(3)), device="cuda")


@pytest.mark.parametrize("shape", [(60, 40), (40, 60)])
def test_gram_vectors_match_float64_gesdd(with_spectrum, shape):
    """float32 ΔW with vectors takes the Gram route: σ and the top vectors agree with the
    float64 SVD of the same float32 matrix (up to sign), and Uᵀ ΔW V = diag(σ)."""
    from spectra.engine.svd import _svd_top_gram

    a = with_spectrum(CHOSEN + [0.1] * 5, *shape, seed=13)[0].float()
    assert _svd_top_gram(a, 4) is not None  # the route svd_dense takes here
    s, u, v = svd_dense(a, vectors=4)
    u64, s64, vh64 = torch.linalg.svd(a.double(), full_matrices=False)
    assert _rel_err(s, s64) < 1e-7
    assert u is not None and v is not None and u.dtype == torch.float32
    assert torch.allclose(
        (u.double().T @ u64[:, :4]).abs(), torch.eye(4, dtype=torch.float64), atol=1e-6
    )
    assert torch.allclose(
        (v.double().T @ vh64[:4].T).abs(), torch.eye(4, dtype=torch.float64), atol=1e-6
    )
    assert torch.allclose(u.double().T @ a.double() @ v.double(), torch.diag(s64[:4]), atol=1e-5)


def test_gram_vectors_fall_back_below_the_ratio(with_spectrum):
    """Vectors of σ_k < 1e-3·σ_1 (here exact zeros) come from gesdd, still orthonormal."""
    from spectra.engine.svd import _svd_top_gram

    a = with_spectrum(CHOSEN, 30, 20, seed=14)[0].float()  # rank 5
    assert _svd_top_gram(a, 5) is not None and _svd_top_gram(a, 6) is None
    assert _svd_top_gram(torch.zeros(6, 4), 1) is None
    s, u, v = svd_dense(a, vectors=8)
    assert u is not None and v is not None and u.shape == (30, 8) and v.shape == (20, 8)
    assert torch.allclose(u.T @ u, torch.eye(8), atol=1e-5)
    assert torch.allclose(v.T @ v, torch.eye(8), atol=1e-5)
    assert _rel_err(s[:5], torch.tensor(CHOSEN)) < 1e-6


def test_auto_route_follows_the_measured_size_limit(with_spectrum, monkeypatch):
    """float32 values take the Gram route up to the CPU's measured limit, gesdd above it;
    forcing backend="gram" ignores the limit. Both give the chosen values."""
    import spectra.engine.svd as svd_mod

    calls: list[tuple[int, ...]] = []
    real = svd_mod._svdvals_gram
    monkeypatch.setattr(svd_mod, "_svdvals_gram", lambda a: calls.append(a.shape) or real(a))
    monkeypatch.setitem(svd_mod._GRAM_VALUES_MAX_N, "cpu", 20)
    small, big = (with_spectrum(CHOSEN, n + 5, n, seed=15)[0].float() for n in (20, 21))
    expected = torch.tensor(CHOSEN)
    for a, routed in ((small, [(25, 20)]), (big, [])):
        calls.clear()
        s = svd_dense(a)[0]
        assert calls == routed and _rel_err(s[:5], expected) < 1e-5
    calls.clear()
    svd_dense(big, backend="gram")
    assert calls == [(26, 21)]


def test_gram_lower_triangle_is_the_float64_product(with_spectrum):
    """The panelled Gram build fills exactly the lower triangle of XᵀX (panel edges included)."""
    from spectra.engine.svd import GRAM_PANEL, _gram

    n = GRAM_PANEL + 37  # two panels, the second partial
    x = with_spectrum([3.0, 2.0, 1.0], 3 * n, n, seed=16)[0].float()
    ref = x.double().T @ x.double()
    got = _gram(x, block_rows=100)
    assert torch.allclose(torch.tril(got), torch.tril(ref), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("capability", "route"),
    [((9, 0), "gram"), ((8, 0), "gram"), ((8, 6), "torch"), ((8, 9), "torch"), ((12, 0), "torch")],
)
def test_cuda_route_needs_full_rate_float64(monkeypatch, capability, route):
    """On CUDA the float64 Gram route is picked only for GPUs with full-rate float64
    (measured on an H200); consumer cards keep cuSOLVER gesvd. Float64 ΔW never takes it."""
    from types import SimpleNamespace

    from spectra.engine.svd import _route

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    fake = SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.float32, shape=(5000, 5000))
    assert _route(fake, "auto", vectors=False) == route  # no size limit on CUDA
    assert _route(fake, "auto", vectors=True) == route
    fake64 = SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.float64, shape=(50, 50))
    assert _route(fake64, "auto", vectors=False) == "torch"
    assert _route(fake, "torch", vectors=False) == "torch"  # a forced backend is kept


# --- values of a factored float32 ΔW from the R × R Gram matrices --------------------------


CPU = torch.device("cpu")


def _qr_route_values(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """σ(L R) by the QR route, in float64: L = Q_u R_u, Rᵀ = Q_v R_v, svdvals(R_u R_vᵀ)."""
    _, r_u = torch.linalg.qr(left.double())
    _, r_v = torch.linalg.qr(right.double().T)
    return torch.linalg.svdvals(r_u @ r_v.T)


@pytest.mark.parametrize(
    ("out", "inp", "inner"), [(96, 64, 16), (64, 96, 16), (200, 40, 8), (33, 17, 1), (60, 48, 17)]
)
@pytest.mark.parametrize("storage", [torch.float32, torch.bfloat16])
def test_factored_values_gram_route_matches_qr_and_dense(out, inp, inner, storage, monkeypatch):
    gen = torch.Generator().manual_seed(out + 7 * inp + inner)
    left = torch.randn(out, inner, generator=gen).to(storage)
    right = torch.randn(inner, inp, generator=gen).to(storage)
    dense = torch.linalg.svdvals(left.double() @ right.double())[:inner]  # independent reference
    gram = svd_module._factored_values_gram(left, right, CPU)
    assert gram is not None  # well-conditioned: the Gram route answers
    assert float(((gram - dense).abs() / dense).max()) < 1e-12
    qr = _qr_route_values(left, right)
    with monkeypatch.context() as m:  # the values route must not run a QR
        m.setattr(torch.linalg, "qr", _no_qr)
        s, u, v = svd_factored(left, right)
    assert s.dtype == torch.float32 and u is None and v is None
    assert torch.equal(s, qr.float())  # the same float32 values as the QR route


def _no_qr(*args: object, **kwargs: object) -> None:
    raise AssertionError("the Gram route ran a QR")


@pytest.mark.parametrize("smallest", [1e-4, 1e-7, 0.0])
def test_factored_values_fall_back_to_qr_when_gram_is_not_accurate(with_spectrum, smallest):
    # σ = 1, 0.5, smallest: the Gram route's error on σ_3 would reach float32's ulp (or σ_3 = 0
    # exactly, a rank-deficient factor), so the QR route answers, accurate for every value
    chosen = [1.0, 0.5, smallest]
    _, u, v = with_spectrum(chosen, 60, 40, seed=11)
    left = (u * torch.tensor(chosen, dtype=torch.float64)).float()  # (60, 3)
    right = v.T.float()  # (3, 40)
    assert svd_module._factored_values_gram(left, right, CPU) is None
    s, _, _ = svd_factored(left, right)
    ref = torch.linalg.svdvals(left.double() @ right.double())[:3]
    assert torch.equal(s, _qr_route_values(left, right).float())
    # each value to float32 rounding of its own size (plus float64 rounding of σ_1 = 1)
    assert bool(((s.double() - ref).abs() <= 2**-24 * ref + 1e-14).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["left", "right"])
def test_nonfinite_factor_values_only_gives_nan(bad, where):
    left, right = torch.ones(8, 3), torch.ones(3, 5)
    (left if where == "left" else right)[1, 2] = bad
    s, u, v = svd_factored(left, right)
    assert len(s) == 3 and bool(torch.isnan(s).all()) and u is None and v is None
