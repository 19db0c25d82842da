"""--skip-mismatched: analyse what matches the base, list what was left out and why; without it
the refusal stays."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from tests.cli.conftest import tree_hash

KEY = "encoder.layer.0.attention.self.query.weight"
MODULE = KEY.removesuffix(".weight")


@pytest.fixture(scope="module")
def resized(ckpts, tmp_path_factory):
    """(a full fine-tune whose layer-0 query was resized, a base whose layer-0 query was)."""
    root = tmp_path_factory.mktemp("resized")
    full = load_file(ckpts.full)
    full[KEY] = full[KEY][:, :16].contiguous()
    save_file(full, root / "full.safetensors")
    base = load_file(ckpts.base)
    base[KEY] = base[KEY][:16].contiguous()
    save_file(base, root / "base.safetensors")
    return root / "full.safetensors", root / "base.safetensors"


@pytest.mark.parametrize("case", ["full", "lora"])
def test_skip_mismatched_analyses_the_rest_and_says_what_it_left_out(
    ckpts, resized, run_cli, tmp_path, case
):
    base, ckpt = (ckpts.base, resized[0]) if case == "full" else (resized[1], ckpts.lora)
    before = {p: tree_hash(p) for p in (base, ckpt)}
    refused = run_cli("compare", base, ckpt, "-q")
    assert refused.code == 1 and MODULE in refused.err
    assert len(refused.err.strip().splitlines()) == 1

    out = tmp_path / "r.json"
    res = run_cli("compare", base, ckpt, "--skip-mismatched", "--json", out, "-q")
    assert res.code == 0, res.err
    result = json.loads(out.read_text())
    analysed = {m["module"] for m in result["modules"]}
    assert MODULE not in analysed and "encoder.layer.1.attention.self.query" in analysed
    skipped_lines = [line for line in res.err.splitlines() if MODULE in line]
    assert len(skipped_lines) == 1 and "skipped" in skipped_lines[0]
    other = "(32, 16)" if case == "full" else "(16, 32)"  # the two shapes: the reason
    assert "(32, 32)" in skipped_lines[0] and other in skipped_lines[0], skipped_lines
    # every other module: the same numbers as when nothing is mismatched
    ref = tmp_path / "ref.json"
    assert run_cli("compare", ckpts.base, ckpts.full if case == "full" else ckpts.lora,
                   "--exclude", "layer\\.0\\.attention\\.self\\.query", "--json", ref, "-q").code == 0  # fmt: skip
    ref_rows = json.loads(ref.read_text())["modules"]
    assert [m["singular_values"] for m in result["modules"]] == [
        m["singular_values"] for m in ref_rows
    ]
    assert {p: tree_hash(p) for p in before} == before


@pytest.mark.parametrize("case", ["full", "lora"])
def test_exclude_the_mismatched_module_needs_no_skip(ckpts, resized, run_cli, tmp_path, case):
    base, ckpt = (ckpts.base, resized[0]) if case == "full" else (resized[1], ckpts.lora)
    out = tmp_path / "r.json"
    res = run_cli("compare", base, ckpt, "--exclude", r"layer\.0\..*query", "--json", out, "-q")
    assert res.code == 0, res.err
    assert MODULE not in {m["module"] for m in json.loads(out.read_text())["modules"]}
    assert "outside --modules/--exclude and not analysed" in res.err
    # a selection that keeps the mismatched module is refused, naming it
    res = run_cli("compare", base, ckpt, "--exclude", "value", "-q")
    assert res.code == 1 and MODULE in res.err and "--exclude" in res.err
    assert len(res.err.strip().splitlines()) == 1
