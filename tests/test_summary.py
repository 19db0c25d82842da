"""Summary means mean one thing: over the finite, non-zero ΔW of each checkpoint, with the
count shown; unchanged and non-finite modules counted and listed; φ and shares in [0, 1]."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "plots"))  # the shared result factory
from result_factory import analyzed_adapters, module_row  # noqa: E402

from spectra.engine.metrics import cumulative_energy, energy_share  # noqa: E402
from spectra.engine.subspace import group_similarity, phi_grid  # noqa: E402
from spectra.summary import summarize  # noqa: E402

SHAPE = (12, 10)


def _rows():
    changed = [module_row(f"layers.{i}.q", "a", "lora", v, SHAPE, rank=3) for i, v in
               enumerate(([3.0, 1.0, 1.0], [2.0, 2.0, 0.5]))]  # fmt: skip
    zero = module_row("layers.2.q", "a", "lora", [0.0, 0.0, 0.0], SHAPE, rank=3)
    bad = module_row("layers.3.q", "a", "lora", [], SHAPE, rank=3)
    bad.update(metrics=None, nonfinite=True)
    return changed, zero, bad


def test_means_are_over_changed_modules_only() -> None:
    changed, zero, bad = _rows()
    assert zero["metrics"]["effective_rank"] == 0.0  # what used to pull the mean down
    (s,) = summarize(inputs_meta=[("a", "lora")], modules=[*changed, zero, bad], similarity=[])
    want = {
        k: math.fsum(r["metrics"][k] for r in changed) / 2
        for k in ("top1_energy", "effective_rank", "stable_rank")
    }
    assert s["mean_effective_rank"] == pytest.approx(want["effective_rank"], rel=1e-15)
    assert s["mean_stable_rank"] == pytest.approx(want["stable_rank"], rel=1e-15)
    assert s["mean_top1_energy"] == pytest.approx(want["top1_energy"], rel=1e-15)
    # closed form of the first: top-1 share 9/11, stable rank 11/9
    assert changed[0]["metrics"]["stable_rank"] == pytest.approx(11 / 9)
    assert (s["modules"], s["changed_modules"]) == (4, 2)
    assert (s["unchanged_modules"], s["unchanged"]) == (1, ["layers.2.q"])
    assert (s["nonfinite_modules"], s["nonfinite"]) == (1, ["layers.3.q"])


def test_a_share_above_one_is_clipped_in_the_mean() -> None:
    changed, _, _ = _rows()
    for r in changed:
        r["metrics"]["top1_energy"] = 1.0000001  # as older writers could produce
    (s,) = summarize(inputs_meta=[("a", "lora")], modules=changed, similarity=[])
    assert s["mean_top1_energy"] == 1.0


def test_unchanged_adapter_end_to_end(tmp_path: Path) -> None:
    """A real PEFT-layout adapter with B = 0 beside a trained one: counted, listed, not 0."""
    result = analyzed_adapters(tmp_path, {"zero": [0.0, 0.0], "trained": [3.0, 1.0]})
    by = {s["label"]: s for s in result["summary"]}
    assert by["zero"]["changed_modules"] == 0 and by["zero"]["unchanged"] == ["layers.0.q"]
    assert by["zero"]["mean_effective_rank"] is None  # not 0
    assert by["trained"]["changed_modules"] == 1 and by["trained"]["unchanged_modules"] == 0
    p = torch.tensor([3.0, 1.0], dtype=torch.float64) / 4
    erank = math.exp(-float((p * p.log()).sum()))
    assert by["trained"]["mean_effective_rank"] == pytest.approx(erank, rel=1e-12)
    assert by["trained"]["mean_phi"]["zero"] == {"left": None, "right": None, "modules": 0}


@pytest.mark.parametrize("seed", range(40))
def test_phi_and_energy_shares_lie_in_unit_interval(seed: int) -> None:
    """Identical subspaces give φ = 1 up to rounding, which used to land at 1 + ulp."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(64, 16, generator=g, dtype=torch.float64))
    grid = phi_grid(q, q)
    assert float(grid.max()) <= 1.0 and float(grid.min()) >= 0.0
    assert torch.allclose(grid.diagonal(), torch.ones(16, dtype=torch.float64), atol=1e-12)
    values = torch.rand(50, generator=g, dtype=torch.float64)
    cum = cumulative_energy(values)
    assert float(cum.max()) <= 1.0 and float(cum[-1]) == pytest.approx(1.0, abs=1e-15)
    assert energy_share(values, 50) <= 1.0


def test_multilora_group_phi_is_clipped() -> None:
    """Two parallel modules with the same factors: φ between them is exactly ≤ 1."""
    from spectra.update import ModuleUpdate

    g = torch.Generator().manual_seed(3)
    b = torch.randn(20, 4, generator=g, dtype=torch.float64)
    a = torch.randn(4, 16, generator=g, dtype=torch.float64)
    update = ModuleUpdate(
        module="m", shape=(20, 16), left=torch.cat([b, b], 1), right=torch.cat([a, a], 0),
        groups=(4, 4),
    )  # fmt: skip
    left, right = group_similarity(update)
    assert float(left.max()) <= 1.0 and float(right.max()) <= 1.0
    assert float(left[0, 1]) == pytest.approx(1.0, abs=1e-12)


def test_k90_and_utilisation_end_to_end(tmp_path: Path) -> None:
    """σ = (3, 1): share 9/10 at k = 1 (the boundary τ = 0.9 exactly), 1 at k = 2."""
    result = analyzed_adapters(tmp_path, {"a": [3.0, 1.0]})
    (row,) = result["modules"]
    m = row["metrics"]
    assert (m["k90"], m["k95"], m["k99"]) == (1, 2, 2)
    assert m["utilisation"] == pytest.approx(m["effective_rank"] / 2, rel=1e-15)
    (s,) = result["summary"]
    assert (s["mean_k90"], s["mean_utilisation"]) == (1.0, m["utilisation"])
