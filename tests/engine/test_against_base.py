"""Amplification factor and intruder dimensions on hand-built W0 and ΔW."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------- in the analysis (real files)


def _save(sd: dict[str, torch.Tensor], path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def _full_pair(tmp_path, shape=(48, 40), scale=0.05, seed=0):
    """(base, tuned, {module: (W0, ΔW) float64}) for two modules of a full fine-tune."""
    g = torch.Generator().manual_seed(seed)
    base, tuned, truth = {}, {}, {}
    for name in ("a.q", "a.v"):
        w0 = torch.randn(shape, generator=g, dtype=F64)
        delta = scale * torch.randn(shape, generator=g, dtype=F64)
        base[name + ".weight"], tuned[name + ".weight"] = w0.float(), (w0 + delta).float()
        truth[name] = (base[name + ".weight"].double(), tuned[name + ".weight"].double()
                       - base[name + ".weight"].double())  # fmt: skip
    return (
        _save(base, tmp_path / "base.safetensors"),
        _save(tuned, tmp_path / "ft.safetensors"),
        truth,
    )


def test_relative_norms_against_float64(tmp_path):
    from spectra.analysis import AnalysisOptions, analyze

    base, tuned, truth = _full_pair(tmp_path)
    result = analyze(base, [tuned], options=AnalysisOptions(similarity=False))
    for row in result["modules"]:
        w0, delta = truth[row["module"]]
        m = row["metrics"]
        s0, sd = torch.linalg.svdvals(w0)[0], torch.linalg.svdvals(delta)[0]
        assert m["relative_norm"] == pytest.approx(float(delta.norm() / w0.norm()), rel=1e-5)
        assert m["relative_spectral_norm"] == pytest.approx(float(sd / s0), rel=1e-4)
    (summary,) = result["summary"]
    rel = [row["metrics"]["relative_norm"] for row in result["modules"]]
    assert summary["mean_relative_norm"] == pytest.approx(sum(rel) / 2, rel=1e-12)
    assert summary["median_relative_norm"] == pytest.approx(sum(rel) / 2, rel=1e-12)
    assert summary["mean_relative_spectral_norm"] is not None


def test_intruders_auto_small_always_never(tmp_path, monkeypatch):
    import spectra.engine.intruder_policy as policy
    from spectra.analysis import AnalysisOptions, analyze

    base, tuned, _ = _full_pair(tmp_path)

    def run(**kw):
        return analyze(base, [tuned], options=AnalysisOptions(similarity=False, **kw))

    small = run()  # 2 modules of 48 × 40: far under the limit
    assert small["settings"]["intruders"] == "auto" and small["settings"]["intruders_run"]
    assert all(r["base_metrics"]["intruder_count"] is not None for r in small["modules"])
    never = run(intruders="never")
    assert not never["settings"]["intruders_run"]
    for r in never["modules"]:
        assert "intruder_count" not in r["base_metrics"] and r["base_metrics"]["amplification"] > 0
    monkeypatch.setattr(policy, "INTRUDER_AUTO_SECONDS", 0.0)  # as if at model scale
    skipped = run()
    assert not skipped["settings"]["intruders_run"] and skipped["settings"]["intruder_pairs"] == 2
    assert all("intruder_count" not in r["base_metrics"] for r in skipped["modules"])
    # the amplification factor is the same with or without intruders
    amps = [r["base_metrics"]["amplification"] for r in small["modules"]]
    assert amps == [r["base_metrics"]["amplification"] for r in skipped["modules"]]
    forced = run(intruders="always")
    assert [r["base_metrics"]["intruder_count"] for r in forced["modules"]] == [
        r["base_metrics"]["intruder_count"] for r in small["modules"]
    ]


def test_cli_says_in_one_line_when_intruders_are_skipped(tmp_path, monkeypatch, run_cli):
    import spectra.engine.intruder_policy as policy

    base, tuned, _ = _full_pair(tmp_path)
    monkeypatch.setattr(policy, "INTRUDER_AUTO_SECONDS", 0.0)
    r = run_cli("compare", base, tuned, "-q")
    assert r.code == 0
    lines = [ln for ln in r.err.splitlines() if "intruder dimensions skipped" in ln]
    assert (
        len(lines) == 1 and "--intruders" in lines[0] and "2 (module, checkpoint) pairs" in lines[0]
    )
    r = run_cli("compare", base, tuned, "-q", "--no-intruders")
    assert r.code == 0 and "intruder" not in r.err
    r = run_cli("compare", base, tuned, "-q", "--intruders", "--json", tmp_path / "r.json")
    assert r.code == 0 and "intruder" not in r.err
    assert '"intruders": "always"' in (tmp_path / "r.json").read_text()


def test_cache_across_runs_gives_the_same_result(tmp_path, monkeypatch):
    from spectra.analysis import AnalysisOptions, analyze

    base, tuned, _ = _full_pair(tmp_path, shape=(300, 260))  # above CACHE_MIN_SIDE
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "cache"))
    opts = AnalysisOptions(similarity=False, intruders="always")
    first = analyze(base, [tuned], options=opts)
    entries = sorted((tmp_path / "cache" / "w0-left").glob("*.safetensors"))
    assert len(entries) == 2  # one per base weight
    stamps = [e.stat().st_mtime_ns for e in entries]
    second = analyze(base, [tuned], options=opts)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert [e.stat().st_mtime_ns for e in entries] == stamps  # read, not rewritten
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "other"))
    analyze(base, [tuned], options=AnalysisOptions(similarity=False, intruders="always",
                                                   cache=False))  # fmt: skip
    assert not (tmp_path / "other").exists()


def _bert_dir(path, seed: int, *, fine_tune_of: torch.nn.Module | None = None):
    """A tiny BERT saved by transformers: freshly initialised with ``seed``, or ``fine_tune_of``
    trained for a few Adam steps on a regression of its hidden states (a real fine-tune)."""
    from tests.models import tiny_bert

    torch.manual_seed(seed)
    model = tiny_bert(hidden_size=32, intermediate_size=64, pooling=False)
    if fine_tune_of is not None:
        model.load_state_dict(fine_tune_of.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        for _ in range(10):
            ids = torch.randint(0, 50, (4, 12), generator=g)
            loss = (model(input_ids=ids).last_hidden_state - 1.0).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(path)
    return model


def test_unrelated_models_warn_and_a_fine_tune_does_not(tmp_path, run_cli):
    base_model = _bert_dir(tmp_path / "base", seed=0)
    _bert_dir(tmp_path / "other", seed=1)
    _bert_dir(tmp_path / "tuned", seed=2, fine_tune_of=base_model)
    base, other, tuned = tmp_path / "base", tmp_path / "other", tmp_path / "tuned"
    warning = "these look like separately trained models, not a fine-tune of this base"
    r = run_cli("compare", base, other, "-q", "--json", tmp_path / "other.json")
    assert r.code == 0
    lines = [ln for ln in r.err.splitlines() if warning in ln]
    assert len(lines) == 1 and lines[0].startswith("other: median ‖ΔW‖_F / ‖W0‖_F = 1.")
    assert "‖ΔW‖/‖W0‖" in r.out  # the summary table's column
    summary = json.loads((tmp_path / "other.json").read_text())["summary"][0]
    assert summary["median_relative_norm"] == pytest.approx(math.sqrt(2), rel=0.15)
    r = run_cli("compare", base, tuned, "-q")
    assert r.code == 0 and warning not in r.err
    # the threshold is an option: a fine-tune flagged on purpose, unrelated models let through
    r = run_cli("compare", base, tuned, "-q", "--unrelated-threshold", "1e-9")
    assert r.code == 0 and warning in r.err
    r = run_cli("compare", base, other, "-q", "--unrelated-threshold", "5")
    assert r.code == 0 and warning not in r.err


def test_bad_unrelated_threshold_is_one_clear_line(tmp_path, run_cli):
    base, tuned, _ = _full_pair(tmp_path)
    r = run_cli("compare", base, tuned, "--unrelated-threshold", "-1")
    assert r.code != 0 and r.out == ""
    assert "--unrelated-threshold must be a positive number, got -1" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
