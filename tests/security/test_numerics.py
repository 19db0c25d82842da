"""Numerics of hostile weights: NaN/Inf are reported per module and kept out of every mean;
identical checkpoints (ΔW = 0) give the documented result; 1-D tensors are skipped and counted.

Documented results checked here (spectra.engine.metrics, spectra.diagnose):

* a module whose ΔW holds NaN/Inf, or whose SVD overflows the compute dtype: row
  ``nonfinite: true``, no singular values, ``metrics: null``, a note saying why; it is left out
  of the per-method means (``summary``), counted in ``nonfinite_modules``, and named on stderr;
* ΔW = 0: every singular value 0, energy shares null (0/0), effective rank, stable rank,
  entropy, norms and numerical rank 0, the note "ΔW = 0", verdict ``unchanged``;
* 1-D tensors (biases, norms) are not modules: counted in ``skipped.<label>.skipped_1d``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.security.hostile import (
    COMMANDS,
    IN,
    MODULES,
    OUT,
    command_args,
    lora_state,
    write_adapter,
)


def _result(run_cli, base, ckpt, tmp_path, *extra: str) -> dict:
    res = run_cli(*command_args("compare", base, ckpt, tmp_path), *extra, inputs=(ckpt,))
    assert res.code == 0, res.err
    return json.loads((tmp_path / "r.json").read_text())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_full_module_is_reported_and_kept_out_of_means(
    ckpts, run_cli, tmp_path, bad
) -> None:
    sd = load_file(ckpts.full)
    key = f"{MODULES[2]}.weight"
    sd[key] = sd[key].clone()
    sd[key][3, 1] = bad
    tuned = tmp_path / "tuned.safetensors"
    save_file(sd, tuned)
    result = _result(run_cli, ckpts.base, tuned, tmp_path)
    rows = {r["module"]: r for r in result["modules"]}
    broken = rows[MODULES[2]]
    assert broken["nonfinite"] is True and broken["metrics"] is None
    assert broken["singular_values"] == [] and "NaN/Inf" in " ".join(broken["notes"])
    finite = [r for m, r in rows.items() if m != MODULES[2]]
    summary = result["summary"][0]
    assert summary["nonfinite_modules"] == 1 and summary["modules"] == len(MODULES)
    for name in ("top1_energy", "effective_rank", "stable_rank"):
        expected = _mean([r["metrics"][name] for r in finite])  # over the 3 finite modules
        assert summary[f"mean_{name}"] == pytest.approx(expected, rel=1e-12)
        assert math.isfinite(summary[f"mean_{name}"])
    # every command once (figures and report draw: ~1 s each), the others for NaN only
    for command in COMMANDS if math.isnan(bad) else ("compare", "diagnose"):
        res = run_cli(*command_args(command, ckpts.base, tuned, tmp_path), inputs=(tuned,))
        assert res.code == 0, (command, res.err)
        if command != "inspect":  # inspect reads no values
            assert f"{MODULES[2]}" in res.err + res.out and "NaN/Inf" in res.err + res.out


def test_nonfinite_factors_of_lora_and_multilora(ckpts, run_cli, tmp_path) -> None:
    from spectra.multilora.format import MultiLoRAFileConfig, write_multilora
    from tests.security.hostile import multilora_tensors

    sd = lora_state()
    sd[f"base_model.model.{MODULES[1]}.lora_B.weight"][0, 0] = float("nan")
    adapter = write_adapter(tmp_path / "adapter", sd)
    t = multilora_tensors()
    t[f"{MODULES[3]}.multilora_scaling"][1, 2] = float("inf")
    ml = tmp_path / "ml.safetensors"
    write_multilora(ml, t, MultiLoRAFileConfig(r=2, n=3, lora_alpha=4.0))
    res = run_cli("compare", ckpts.base, adapter, ml, "-q", "--json", tmp_path / "r.json")
    assert res.code == 0, res.err
    result = json.loads((tmp_path / "r.json").read_text())
    flagged = {(r["label"], r["module"]) for r in result["modules"] if r["nonfinite"]}
    assert flagged == {("adapter", MODULES[1]), ("ml", MODULES[3])}
    assert f"adapter: 1 of 4 modules NaN/Inf, not in the means: {MODULES[1]}" in res.err
    assert f"ml: 1 of 4 modules NaN/Inf, not in the means: {MODULES[3]}" in res.err
    assert all(s["nonfinite_modules"] == 1 for s in result["summary"])
    # the similarity of the two methods skips the broken modules, keeps the others
    compared = {s["module"] for s in result["similarity"]}
    assert compared == {MODULES[0], MODULES[2]}


def test_finite_factors_whose_product_overflows_float32(ckpts, run_cli, tmp_path) -> None:
    """B, A ~ 1e30 are finite in float32 but ΔW = s·B·A ~ 1e60 is not: the module is nonfinite
    (not a crash writing inf into JSON), and float64 computes it."""
    sd = lora_state()
    sd[f"base_model.model.{MODULES[0]}.lora_A.weight"] = torch.full((2, IN), 1e30)
    sd[f"base_model.model.{MODULES[0]}.lora_B.weight"] = torch.full((OUT, 2), 1e30)
    adapter = write_adapter(tmp_path / "adapter", sd)
    row = _result(run_cli, ckpts.base, adapter, tmp_path)["modules"][0]
    assert row["module"] == MODULES[0] and row["nonfinite"] is True
    assert "float64" in " ".join(row["notes"])
    row = _result(run_cli, ckpts.base, adapter, tmp_path, "--dtype", "float64")["modules"][0]
    assert row["nonfinite"] is False
    # ΔW = s·B·A = 2·(a·1_(8×2))(a·1_(2×6)) = 4a²·1_(8×6), a = float32(1e30): rank one,
    # σ1 = 4a²·√48
    a = float(torch.tensor(1e30))
    assert row["singular_values"][0] == pytest.approx(4 * a * a * math.sqrt(OUT * IN), rel=1e-9)


def test_identical_checkpoints_give_the_documented_zero_result(ckpts, run_cli, tmp_path) -> None:
    same = tmp_path / "same.safetensors"
    same.write_bytes(ckpts.base.read_bytes())
    result = _result(run_cli, ckpts.base, same, tmp_path)
    assert len(result["modules"]) == len(MODULES)
    for row in result["modules"]:
        assert row["singular_values"] == [0.0] * min(OUT, IN) and row["nonfinite"] is False
        m = row["metrics"]
        assert m["top1_energy"] is None and m["top4_energy"] is None  # 0/0: undefined
        assert m["effective_rank"] == 0.0 and m["stable_rank"] == 0.0
        assert m["spectral_entropy"] == 0.0 and m["frobenius_norm"] == 0.0
        assert m["numerical_rank"] == 0
        assert any("ΔW = 0" in n for n in row["notes"])
    summary = result["summary"][0]
    # unchanged modules are counted and listed, not averaged in as zeros (issue 12, item 4)
    assert summary["mean_top1_energy"] is None and summary["mean_effective_rank"] is None
    assert summary["changed_modules"] == 0 and summary["unchanged_modules"] == len(MODULES)
    for command in COMMANDS:
        res = run_cli(*command_args(command, ckpts.base, same, tmp_path), inputs=(same,))
        assert res.code == 0, (command, res.err)
        assert "Traceback" not in res.err and "Warning" not in res.err
    res = run_cli("diagnose", same, "--base", ckpts.base, "--fail-on", "unchanged")
    assert res.code == 3 and "unchanged" in res.out


def test_untrained_lora_b_zero_is_a_zero_update(ckpts, run_cli, tmp_path) -> None:
    sd = {k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in lora_state().items()}
    adapter = write_adapter(tmp_path / "adapter", sd)
    result = _result(run_cli, ckpts.base, adapter, tmp_path)
    for row in result["modules"]:
        assert row["singular_values"] == [0.0, 0.0] and row["structural_zeros"] == min(OUT, IN) - 2
        assert row["metrics"]["top1_energy"] is None and row["metrics"]["stable_rank"] == 0.0


def test_one_dimensional_tensors_are_skipped_and_counted(ckpts, run_cli, tmp_path) -> None:
    base, tuned = load_file(ckpts.base), load_file(ckpts.full)
    for name in ("layers.0.q.bias", "layers.1.norm.weight", "final.bias"):
        base[name] = torch.zeros(OUT)
        tuned[name] = torch.ones(OUT)
    save_file(base, tmp_path / "b.safetensors")
    save_file(tuned, tmp_path / "t.safetensors")
    ins = (tmp_path / "b.safetensors", tmp_path / "t.safetensors")
    result = _result(run_cli, ins[0], ins[1], tmp_path)
    assert result["skipped"]["t"]["skipped_1d"] == 4  # the 3 above + layers.0.norm.weight
    assert sorted(r["module"] for r in result["modules"]) == sorted(MODULES)
    res = run_cli(*command_args("compare", ins[0], ins[1], tmp_path), inputs=ins)
    assert "t: skipped 4 1-D tensors" in res.err
    res = run_cli(*command_args("inspect", ins[0], ins[1], tmp_path), inputs=ins)
    assert res.code == 0 and "skipped 4 1-D tensors" in res.out
