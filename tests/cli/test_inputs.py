"""How compare / figures / report / diagnose read their positional arguments: adapters alone,
BASE first, --base; the ambiguous cases refused with what to write instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig

from tests.cli.conftest import tree_hash
from tests.loaders.conftest import Toy, make_peft_adapter


def _inputs_untouched(*paths: Path):
    before = {p: tree_hash(p) for p in paths}
    return lambda: {p: tree_hash(p) for p in paths} == before


def test_adapters_alone_no_base(ckpts, adapters, run_cli, tmp_path):
    paths = (ckpts.lora, adapters.plain, adapters.kohya, adapters.loha, ckpts.multilora)
    untouched = _inputs_untouched(*paths)
    out = tmp_path / "r.json"
    res = run_cli("compare", *paths, "--json", out, "-q")
    assert res.code == 0, res.err
    result = json.loads(out.read_text())
    assert result["base"] is None and result["settings"]["against_base"] is False
    assert [i["kind"] for i in result["inputs"]] == ["lora", "lora", "kohya", "loha", "multilora"]
    # the singular values are those of s·B·A formed here from the stored factors (float64)
    for label, file_label, rank in (
        ("lora", "lora", 4),
        ("plain", "lora", 4),
        ("kohya", "kohya", 2),
    ):
        rows = [m for m in result["modules"] if m["label"] == label]
        assert rows, label
        for m in rows:
            want = torch.linalg.svdvals(adapters.delta[(file_label, m["module"])])
            got = torch.tensor(m["singular_values"], dtype=torch.float64)
            n = len(got)
            assert torch.allclose(got, want[:n], rtol=1e-4, atol=1e-6 * float(want[0]))
            assert n == rank and float(want[n:].max()) <= 1e-9 * float(want[0])
    # the PEFT adapter and the plain file hold the same ΔW: φ = 1 between them
    sims = [s for s in result["similarity"] if {s["a"], s["b"]} == {"lora", "plain"}]
    assert sims and all(s["phi"][-1][-1] == pytest.approx(1.0, abs=1e-5) for s in sims)
    assert untouched()


def test_base_first_and_dash_dash_base_give_the_same_json(ckpts, run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("compare", ckpts.base, ckpts.lora, "--json", a, "-q").code == 0
    assert run_cli("compare", "--base", ckpts.base, ckpts.lora, "--json", b, "-q").code == 0
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text())["base"] == {"path": str(ckpts.base)}


def test_with_dash_dash_base_every_positional_is_a_checkpoint(ckpts, run_cli, tmp_path):
    out = tmp_path / "r.json"
    res = run_cli("compare", ckpts.full, ckpts.lora, "--base", ckpts.base, "--json", out, "-q")
    assert res.code == 0, res.err
    assert [i["kind"] for i in json.loads(out.read_text())["inputs"]] == ["full", "lora"]


@pytest.mark.parametrize("command", ["figures", "report"])
def test_figures_and_report_of_adapters_alone(ckpts, adapters, run_cli, tmp_path, command):
    untouched = _inputs_untouched(ckpts.lora, adapters.plain)
    out = tmp_path / command
    fmt = ["--format", "png"] if command == "figures" else []
    res = run_cli(command, ckpts.lora, adapters.plain, "--out", out, "-q", *fmt)
    assert res.code == 0, res.err
    written = [Path(line) for line in res.out.split()]
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert untouched()


@pytest.fixture(scope="module")
def needs_base(tmp_path_factory):
    """A DoRA adapter and a modules_to_save adapter saved by PEFT (ΔW needs W0)."""
    root = tmp_path_factory.mktemp("needs_base")
    dora = make_peft_adapter(
        Toy(), LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"], use_dora=True), root / "dora"
    )
    saved = make_peft_adapter(
        Toy(),
        LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"], modules_to_save=["head"]),
        root / "mts",
    )
    return dora.adapter, saved.adapter


def _refusal(res, *needles: str) -> None:
    assert res.code == 1, (res.code, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spectra: error:"), res.err
    for needle in needles:
        assert needle in res.err, (needle, res.err)


@pytest.mark.parametrize("command", ["compare", "figures", "report", "diagnose"])
def test_single_full_checkpoint_without_base_is_refused(ckpts, run_cli, tmp_path, command):
    untouched = _inputs_untouched(ckpts.full)
    out = ["--out", tmp_path / "o"] if command in ("figures", "report") else []
    res = run_cli(command, ckpts.full, "-q", *out)
    _refusal(res, str(ckpts.full), "needs its base", f"spectra {command} BASE", "--base BASE")
    assert untouched()


def test_full_checkpoint_after_an_adapter_is_refused(ckpts, run_cli):
    res = run_cli("compare", ckpts.lora, ckpts.full, "-q")
    _refusal(res, str(ckpts.full), "put the base first", "--base BASE")


def test_base_also_given_as_checkpoint_is_refused(ckpts, run_cli):
    res = run_cli("compare", ckpts.base, ckpts.lora, "--base", ckpts.base, "-q")
    _refusal(res, str(ckpts.base), "both as --base and as a checkpoint")


def test_base_needing_adapters_without_base_are_refused(needs_base, run_cli):
    for adapter in needs_base:
        untouched = _inputs_untouched(adapter)
        res = run_cli("compare", adapter, "-q")
        _refusal(res, str(adapter), "needs BASE")
        assert untouched()


def test_no_inputs_at_all(run_cli, tmp_path):
    res = run_cli("figures", "--out", tmp_path / "f")
    _refusal(res, "--from-json")
