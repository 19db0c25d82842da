"""`spectra study --quick` end to end: real training, analysis, claims, figures, caching.

Oracle for the numbers: ``spectra.analysis.analyze`` run separately on the saved checkpoints of
one seed (three inputs, the summary path of ``spectra compare``) must give the study's values.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spectra.analysis import AnalysisOptions, analyze


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    from spectra_cli.app import main

    out = tmp_path_factory.mktemp("study")
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--quick", "--out", str(out), "--workers", "1", "--quiet"])
    assert exit_info.value.code == 0
    return out, time.perf_counter() - t0


def test_writes_result_tables_and_figures(study) -> None:
    out, _ = study
    result = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert result["format"] == "spectra.study/1"
    assert result["settings"]["seeds"] == [0, 1]
    assert result["complete_runs"] == result["planned_runs"] == 2 + 2 * 2
    assert [s["seed"] for s in result["per_seed"]] == [0, 1]
    arms = {"full", "lora", "multilora", "multilora_n1", "multilora_init_lora"}
    assert set(result["per_seed"][0]["arms"]) == arms
    ids = [c["id"] for c in result["claims"]]
    assert ids[:8] == ["1", "2a", "2b", "3a", "3b", "4a", "4b", "5"] and ids.count("6") == 8
    assert all(c["verdict"] in ("holds", "does not hold", "undecided") for c in result["claims"])
    assert [(r["a"], r["b"]) for r in result["ablation"]] == [
        ("multilora_n1", "lora"),
        ("multilora", "multilora_init_lora"),
    ]
    md = (out / "study.md").read_text(encoding="utf-8")
    assert "| 1 | MultiLoRA top-1 energy share < LoRA's |" in md
    for name in ("study_arms.png", "study_histogram.png"):
        assert (out / "figures" / name).stat().st_size > 10_000


def test_numbers_equal_a_separate_analysis_of_the_saved_files(study) -> None:
    out, _ = study
    result = json.loads((out / "study.json").read_text(encoding="utf-8"))
    seed0 = result["per_seed"][0]
    run = next((out / "runs").glob("main-s0-*"))
    separate = analyze(
        out / "base.safetensors",
        [run / "full.safetensors", run / "lora", run / "multilora.safetensors"],
        labels=["full", "lora", "multilora"],
        options=AnalysisOptions(top_k=8, modules=r"^encoder\.layer\.0\.", against_base=False),
    )
    summary = {s["label"]: s for s in separate["summary"]}
    for label in ("full", "lora", "multilora"):
        ours = seed0["arms"][label]
        assert ours["top1_energy"] == pytest.approx(summary[label]["mean_top1_energy"], rel=1e-9)
        assert ours["effective_rank"] == pytest.approx(
            summary[label]["mean_effective_rank"], rel=1e-9
        )
    for label in ("lora", "multilora"):  # φ(8, 8) against full fine-tuning
        ours = seed0["arms"][label]
        theirs = summary[label]["mean_phi"]["full"]
        assert ours["phi_left"] == pytest.approx(theirs["left"], rel=1e-6)
        assert ours["phi_right"] == pytest.approx(theirs["right"], rel=1e-6)
    log = json.loads((run / "log.json").read_text(encoding="utf-8"))
    assert seed0["arms"]["lora"]["accuracy"] == log["accuracy"]["lora"]


def test_second_call_reuses_every_run_and_analysis(study) -> None:
    from spectra.study import StudyOptions, StudySize, run_study

    out, _ = study
    messages: list[str] = []
    before = json.loads((out / "study.json").read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    again = run_study(StudyOptions(out=out, size=StudySize.quick(), workers=1), say=messages.append)
    assert time.perf_counter() - t0 < 30
    assert messages == ["6 of 6 runs cached; training 0"]  # nothing trained or analysed again
    assert again["per_seed"] == before["per_seed"] and again["claims"] == before["claims"]


def test_no_train_reports_only_complete_runs(study, tmp_path: Path) -> None:
    from spectra.study import StudyOptions, StudySize, run_study

    result = run_study(StudyOptions(out=tmp_path, size=StudySize.quick(), train=False))
    assert result["complete_runs"] == 0 and result["per_seed"] == []
    assert all(c["verdict"] == "undecided" for c in result["claims"])
    assert (tmp_path / "study.md").is_file()


def test_bad_seeds_are_one_clear_line(tmp_path: Path, capsys) -> None:
    from spectra_cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--quick", "--out", str(tmp_path), "--seeds", "0,x"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds takes integers" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--quick", "--out", str(tmp_path), "--seeds", "0", "--ablation-seeds", "1"])
    assert exit_info.value.code == 1
    assert "ablation seeds [1]" in capsys.readouterr().err
