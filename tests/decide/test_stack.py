"""spectra stack: closed forms on real PEFT adapters (identical adapters double σ₁, orthogonal
ones keep it, an adapter and its negative cancel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from spectra.decide.stack import check_stack, stack
from spectra.errors import CheckpointMismatchError, OptionError
from spectra.update import ModuleUpdate
from tests.models import tiny_bert

QUERY = "encoder.layer.0.attention.self.query"


def _adapter(path: Path, rows: slice, cols: slice, *, hidden: int = 16) -> Path:
    """A real PEFT adapter on query whose ΔW lives in the given output rows / input columns."""
    torch.manual_seed(0)
    peft_model = get_peft_model(
        tiny_bert(num_hidden_layers=1, hidden_size=hidden),
        LoraConfig(r=2, lora_alpha=2, target_modules=["query"]),
    )
    layer = peft_model.base_model.model.get_submodule(QUERY)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (2, in), (out, 2)
        a.zero_()
        b.zero_()
        a[:, cols] = torch.randn(2, cols.stop - cols.start, generator=g)
        b[rows, :] = torch.randn(rows.stop - rows.start, 2, generator=g)
    peft_model.save_pretrained(str(path))
    return path


def _sigma1(rows: slice, cols: slice) -> float:
    """σ₁ of the ΔW :func:`_adapter` writes, from the same draws (α/r = 1)."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(2, cols.stop - cols.start, generator=g)
    b = torch.randn(rows.stop - rows.start, 2, generator=g)
    return float(torch.linalg.svdvals((b @ a).double())[0])


def test_identical_adapters_double_sigma1(tmp_path: Path) -> None:
    one = _adapter(tmp_path / "a", slice(0, 8), slice(0, 8))
    checks, partial = stack([one, one])
    (c,) = checks
    assert partial == [] and c.module == QUERY
    assert c.spike == pytest.approx(2.0, rel=1e-6)
    assert c.sigma1_sum == pytest.approx(2 * _sigma1(slice(0, 8), slice(0, 8)), rel=1e-5)
    assert (c.phi_top_left, c.phi_top_right) == (pytest.approx(1.0), pytest.approx(1.0))
    assert c.verdict == "interfering"
    weighted = stack([one, one], weights=[1.0, 0.5])[0][0]
    assert weighted.spike == pytest.approx(1.5, rel=1e-6)
    assert stack([one, one], weights=[1.0, -1.0])[0][0].verdict == "cancelling"


def test_orthogonal_adapters_keep_sigma1(tmp_path: Path) -> None:
    one = _adapter(tmp_path / "a", slice(0, 8), slice(0, 8))
    two = _adapter(tmp_path / "b", slice(8, 16), slice(8, 16))
    (c,) = stack([one, two])[0]
    assert c.spike == pytest.approx(1.0, rel=1e-6)
    assert c.phi_top_left == pytest.approx(0.0, abs=1e-10)
    assert c.phi_k_right == pytest.approx(0.0, abs=1e-10)
    assert c.verdict == "independent"
    # the sum's spectrum is the union of the two spectra (here the same draws, twice)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)
    s = torch.linalg.svdvals((b @ a).double())[:2].tolist()
    assert list(c.top_values[:4]) == pytest.approx([s[0], s[0], s[1], s[1]], rel=1e-5)


def test_dense_and_factored_sums_agree() -> None:
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(6, 2, generator=g), torch.randn(2, 5, generator=g)
    fac = ModuleUpdate("m", (6, 5), left=left, right=right)
    dense = ModuleUpdate("m", (6, 5), dense=left @ right)
    a = check_stack("m", [fac, fac], [1.0, 1.0])
    b = check_stack("m", [fac, dense], [1.0, 1.0])
    assert a.top_values[:2] == pytest.approx(b.top_values[:2], rel=1e-5)
    assert max(b.top_values[2:]) < 1e-5 * b.top_values[0]  # a rank-2 sum
    assert a.spike == pytest.approx(2.0, rel=1e-6)


def test_bad_input(tmp_path: Path, run_cli) -> None:
    one = _adapter(tmp_path / "a", slice(0, 8), slice(0, 8))
    other = _adapter(tmp_path / "b", slice(0, 4), slice(0, 4), hidden=8)
    with pytest.raises(OptionError):
        stack([one])
    with pytest.raises(OptionError, match="weights"):
        stack([one, one], weights=[1.0])
    with pytest.raises(CheckpointMismatchError, match="shapes"):
        stack([one, other])
    r = run_cli("stack", one, one, "--weights", "1,x")
    assert r.code == 1 and "--weights" in r.err


def test_cli_stack(tmp_path: Path, run_cli) -> None:
    one = _adapter(tmp_path / "a", slice(0, 8), slice(0, 8))
    out = tmp_path / "stack.json"
    r = run_cli("stack", one, one, "--json", out, "--fail-on-interfering")
    assert r.code == 3 and "interfering" in r.out
    data = json.loads(out.read_text())
    assert data["modules"][0]["spike"] == pytest.approx(2.0, rel=1e-6)
