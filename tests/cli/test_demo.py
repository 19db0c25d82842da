"""`spectra demo --quick` end to end (reusing the session's quick training run), and the
README's `spectra compare base.pt lora.pt multilora.pt` verbatim on the files it wrote."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser


def test_demo_quick_reuses_run_and_writes_everything(quick_run, run_cli):
    recipe, _ = quick_run
    out = recipe.out_dir.parent
    log_before = (recipe.out_dir / "log.json").read_bytes()
    res = run_cli("demo", "--quick", "--out", out, "--threads", "1", "--device", "cpu")
    assert res.code == 0, res.err
    assert "reusing the complete run" in res.err
    assert (recipe.out_dir / "log.json").read_bytes() == log_before  # nothing retrained
    # accuracy table then the spectral summary, one row per method
    assert "sentiment" in res.out and "compare" in res.out and "iris" in res.out
    for method in ("full", "lora", "multilora"):
        assert any(line.split()[:2] == [method, method] for line in res.out.splitlines())

    result = json.loads((out / "results.json").read_text())
    assert [i["kind"] for i in result["inputs"]] == ["full", "lora", "multilora"]
    # only the encoder layers, where both adapters sit: 6 layers x 6 linears per method
    assert {s["label"]: s["modules"] for s in result["summary"]} == {
        "full": 36,
        "lora": 36,
        "multilora": 36,
    }
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(pngs) == 7 and all(os.path.getsize(out / "figures" / p) > 10_000 for p in pngs)
    html = (out / "report" / "report.html").read_text()
    parser = HTMLParser()
    parser.feed(html)
    assert html.count("data:image/png;base64,") == 7


def test_readme_compare_of_torch_files_runs_verbatim(quick_run, run_cli, monkeypatch):
    recipe, _ = quick_run
    monkeypatch.chdir(recipe.out_dir)
    res = run_cli("compare", "base.pt", "lora.pt", "multilora.pt", "-q", "--no-base-metrics")
    assert res.code == 0, res.err
    rows = {line.split()[0]: line.split() for line in res.out.splitlines()[2:4]}
    assert rows["lora"][1] == "lora" and rows["multilora"][1] == "multilora"
    assert rows["lora"][2] == "36" and rows["multilora"][2] == "36"
