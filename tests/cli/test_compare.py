"""`spectra compare` and `spectra inspect` driven in-process on real checkpoint files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import TARGETS, tree_hash
from tests.conftest import CliResult


def _compare_json(run_cli, out: Path, *args: object) -> tuple[CliResult, dict]:
    """Run `spectra compare ARGS --json OUT -q`, check it exits 0; the run and its JSON."""
    res = run_cli("compare", *args, "--json", out, "-q")
    assert res.code == 0, res.err
    return res, json.loads(out.read_text())


def test_compare_summary_and_json(ckpts, run_cli, tmp_path):
    paths = (ckpts.base, ckpts.full, ckpts.lora, ckpts.multilora)
    before = {p: tree_hash(p) for p in paths}
    labels = ["--label", "ft", "--label", "lora", "--label", "ml"]
    res, result = _compare_json(run_cli, tmp_path / "r.json", *paths, *labels)
    lines = res.out.splitlines()
    assert lines[0].split()[:8] == [
        "method",
        "kind",
        "modules",
        "in",
        "means",
        "top1",
        "energy",
        "eff.",
    ]
    assert [ln.split()[0] for ln in lines[2:5]] == ["ft", "lora", "ml"]

    assert [i["label"] for i in result["inputs"]] == ["ft", "lora", "ml"]
    assert [i["kind"] for i in result["inputs"]] == ["full", "lora", "multilora"]
    lora_rows = [m for m in result["modules"] if m["label"] == "lora"]
    assert len(lora_rows) == 2 * len(TARGETS)
    for m in lora_rows:
        assert m["rank"] == 4 and len(m["singular_values"]) == 4
        assert m["structural_zeros"] == 32 - 4
        assert set(m["metrics"]) >= {
            "top1_energy",
            "effective_rank",
            "stable_rank",
            "spectral_entropy",
        }
        assert m["base_metrics"]["intruder_k"] == 10
    ml = [m for m in result["modules"] if m["label"] == "ml"]
    assert all(m["multilora"]["n"] == 3 for m in ml)
    # every pair, both sides, for every module both have
    pairs = {(s["a"], s["b"], s["side"]) for s in result["similarity"]}
    assert pairs == {
        (a, b, side)
        for a, b in [("ft", "lora"), ("ft", "ml"), ("lora", "ml")]
        for side in ("left", "right")
    }
    for s in result["similarity"]:
        k = s["k"]
        assert len(s["phi"]) == k and all(len(row) == k for row in s["phi"])
        assert all(-1e-9 <= v <= 1 + 1e-9 for row in s["phi"] for v in row)
    assert {p: tree_hash(p) for p in before} == before


def test_same_adapter_twice_has_phi_one(ckpts, run_cli, tmp_path):
    flags = ["--label", "a", "--label", "b", "--no-base-metrics"]
    _, result = _compare_json(
        run_cli, tmp_path / "r.json", ckpts.base, ckpts.lora, ckpts.lora, *flags
    )
    for s in result["similarity"]:
        assert s["phi"][-1][-1] == pytest.approx(1.0, abs=1e-5)
        assert s["grassmann_distance"] == pytest.approx(0.0, abs=2e-3)
    assert result["summary"][0]["mean_phi"]["b"]["left"] == pytest.approx(1.0, abs=1e-5)


def test_json_is_byte_identical_across_runs(ckpts, run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        _compare_json(run_cli, out, ckpts.base, ckpts.lora, ckpts.multilora)
    assert a.read_bytes() == b.read_bytes()


def test_modules_regex_and_float64(ckpts, run_cli, tmp_path):
    flags = ("--modules", r"layer\.1\..*query", "--dtype", "float64")
    _, result = _compare_json(run_cli, tmp_path / "r.json", ckpts.base, ckpts.lora, *flags)
    assert [m["module"] for m in result["modules"]] == ["encoder.layer.1.attention.self.query"]
    assert result["settings"]["dtype"] == "float64"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--label", "only-one"], "--label"),
        (["--modules", "nothing-matches-this"], "matches none"),
        (["--modules", "("], "not a valid regex"),
        (["--dtype", "float16"], "float32 or float64"),
        (["--top-k", "0"], "--top-k"),
        (["--device", "cuda"], "cuda"),
    ],
)
def test_bad_options_exit_1_with_one_message(ckpts, run_cli, args, needle):
    res = run_cli("compare", ckpts.base, ckpts.lora, ckpts.multilora, "-q", *args)
    assert res.code == 1
    assert needle in res.err
    assert "Traceback" not in res.err and res.err.startswith("spectra: error:")


def test_missing_file_names_it(ckpts, run_cli, tmp_path):
    res = run_cli("compare", ckpts.base, tmp_path / "nope.safetensors", "-q")
    assert res.code == 1 and "nope.safetensors" in res.err and "Traceback" not in res.err


def test_full_checkpoint_without_matching_base_is_refused(ckpts, run_cli, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(ckpts.full)
    key = "encoder.layer.0.attention.self.query.weight"
    sd[key] = sd[key][:, :16].contiguous()
    bad = tmp_path / "bad.safetensors"
    save_file(sd, bad)
    res = run_cli("compare", ckpts.base, bad, "-q")
    assert res.code == 1 and key.removesuffix(".weight") in res.err


def test_usage_error_exits_2(run_cli):
    assert run_cli("compare").code == 2


def test_inspect_lists_modules(ckpts, run_cli):
    res = run_cli("inspect", ckpts.lora)
    assert res.code == 0, res.err
    assert "kind:    lora" in res.out
    assert "encoder.layer.1.attention.self.value" in res.out
    assert "alpha/r" in res.out.lower() or "α/r" in res.out
    res = run_cli("inspect", ckpts.full, "--base", ckpts.base)
    assert res.code == 0 and "kind:    full" in res.out


def test_python_dash_m_matches_console_script(ckpts):
    res = subprocess.run(
        [sys.executable, "-m", "spectra", "inspect", str(ckpts.multilora)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "kind:    multilora" in res.stdout
