"""`spectra trajectory` on a real Trainer output folder: per-checkpoint metrics equal compare's,
φ(k, k) against a float64 SVD of the saved adapters, files, figures, CLI, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from spectra_cli.app import main

from spectra.analysis import AnalysisOptions, analyze
from spectra.errors import FileFormatError, OptionError
from spectra.plots.trajectory import trajectory_figure, trajectory_heatmap_figure
from spectra.track.trajectory import find_points, trajectory
from spectra.track.trajectory_files import load_trajectory, save_trajectory
from tests.track.conftest import EVERY, STEPS, Run

STEP_LIST = list(range(EVERY, STEPS + 1, EVERY))


@pytest.fixture(scope="module")
def traj(peft_run: Run):
    return trajectory(peft_run.out)


def _top_vectors(ckpt: Path, module: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k left and right singular vectors of s·B·A from the saved adapter, float64."""
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    t = load_file(str(ckpt / "adapter_model.safetensors"))
    a = t[f"base_model.model.{module}.lora_A.weight"].double()
    b = t[f"base_model.model.{module}.lora_B.weight"].double()
    u, _, vh = torch.linalg.svd(cfg["lora_alpha"] / cfg["r"] * b @ a)
    return u[:, :k], vh[:k].T


def test_checkpoints_in_step_order_and_metrics_equal_compare(traj, peft_run: Run) -> None:
    assert [c["step"] for c in traj["checkpoints"]] == STEP_LIST
    assert {c["kind"] for c in traj["checkpoints"]} == {"lora"}
    for step in STEP_LIST:
        rows = analyze(
            None, [peft_run.out / f"checkpoint-{step}"], options=AnalysisOptions(similarity=False)
        )["modules"]
        mine = {r["module"]: r for r in traj["modules"] if r["step"] == step}
        assert set(mine) == {r["module"] for r in rows}
        for row in rows:
            assert mine[row["module"]]["metrics"] == row["metrics"]
            assert mine[row["module"]]["singular_values"] == row["singular_values"]


def test_phi_against_float64_svd_of_the_saved_adapters(traj, peft_run: Run) -> None:
    pairs = {
        (p["module"], p["side"], p["relation"], p["step_a"], p["step_b"]): p for p in traj["phi"]
    }
    modules = sorted({r["module"] for r in traj["modules"]})
    expected_pairs = [
        (a, b, "consecutive") for a, b in zip(STEP_LIST[:-1], STEP_LIST[1:], strict=True)
    ] + [(a, STEP_LIST[-1], "last") for a in STEP_LIST[:-1]]
    assert len(pairs) == len(modules) * 2 * len(expected_pairs)
    for module in modules:
        for a, b, relation in expected_pairs:
            for side, index in (("left", 0), ("right", 1)):
                row = pairs[(module, side, relation, a, b)]
                assert row["k"] == 4  # min(top_k = 16, rank 4)
                ua = _top_vectors(peft_run.out / f"checkpoint-{a}", module, 4)[index]
                ub = _top_vectors(peft_run.out / f"checkpoint-{b}", module, 4)[index]
                phi = float((ua.T @ ub).pow(2).sum() / 4)
                assert row["phi"] == pytest.approx(phi, abs=1e-5)
                assert 0.0 <= row["phi"] <= 1.0 + 1e-9


def test_files_round_trip_and_tables(traj, tmp_path) -> None:
    written = save_trajectory(traj, tmp_path / "out")
    assert [p.name for p in written] == [
        "trajectory.json", "trajectory_metrics.csv", "trajectory_phi.csv"
    ]  # fmt: skip
    assert load_trajectory(tmp_path / "out" / "trajectory.json") == json.loads(json.dumps(traj))
    with open(tmp_path / "out" / "trajectory_metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert len(metrics) == len(traj["modules"])
    first = traj["modules"][0]
    assert float(metrics[0]["top1_energy"]) == first["metrics"]["top1_energy"]
    assert int(metrics[0]["k90"]) == first["k90"]
    with open(tmp_path / "out" / "trajectory_phi.csv") as f:
        phi = list(csv.DictReader(f))
    assert len(phi) == len(traj["phi"]) and float(phi[0]["phi"]) == traj["phi"][0]["phi"]
    (tmp_path / "bad.json").write_text('{"modules": []}')
    with pytest.raises(FileFormatError, match="not a spectra trajectory"):
        load_trajectory(tmp_path / "bad.json")


def test_figures_draw_the_numbers(traj) -> None:
    fig = trajectory_figure(traj)
    top1 = fig.axes[0]
    assert len(top1.lines) == 2  # one per module type
    line = next(x for x in top1.lines if x.get_label() == "attention.self.query")
    expected = [
        sum(r["metrics"]["top1_energy"] for r in traj["modules"]
            if r["step"] == s and r["module_type"] == "attention.self.query") / 2
        for s in STEP_LIST
    ]  # fmt: skip
    assert list(line.get_xdata()) == STEP_LIST
    assert list(line.get_ydata()) == pytest.approx(expected)
    heat = trajectory_heatmap_figure(traj, "top1_energy")
    grid = heat.axes[0].images[0].get_array()
    assert grid.shape == (2, len(STEP_LIST))  # layers × steps
    row = next(r for r in traj["modules"] if r["layer"] == 1 and r["step"] == STEP_LIST[0]
               and r["module_type"] == "attention.self.query")  # fmt: skip
    assert float(grid[1, 0]) == pytest.approx(row["metrics"]["top1_energy"])
    with pytest.raises(ValueError, match="metric"):
        trajectory_heatmap_figure(traj, "nope")


def test_multilora_checkpoints_listed_in_order(multilora_run: Run) -> None:
    files = [multilora_run.out / f"checkpoint-{s}" / "multilora.safetensors" for s in STEP_LIST]
    traj = trajectory(files)
    assert [c["step"] for c in traj["checkpoints"]] == STEP_LIST  # from the folder names
    assert {c["kind"] for c in traj["checkpoints"]} == {"multilora"}
    assert all(0.0 <= p["phi"] <= 1.0 + 1e-9 for p in traj["phi"])
    with pytest.raises(OptionError, match="not increasing"):
        trajectory(files[::-1])
    # the run folder: each checkpoint-<step>/ holds one MultiLoRA file, which is read
    from_dir = trajectory(multilora_run.out)
    assert [c["path"] for c in from_dir["checkpoints"]] == [str(f) for f in files]
    assert [r["metrics"] for r in from_dir["modules"]] == [r["metrics"] for r in traj["modules"]]


def test_find_points_orders_by_number(tmp_path) -> None:
    for step in (10, 9, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "runs").mkdir()  # not a checkpoint
    assert [p.step for p in find_points([tmp_path])] == [9, 10, 100]
    plain = [tmp_path / "runs", tmp_path / "checkpoint-9"]
    assert [p.step for p in find_points(plain)] == [1, 2]  # one path without a step: positions
    with pytest.raises(FileFormatError, match="no such file"):
        find_points([tmp_path / "missing"])


def test_cli_writes_tables_and_figures(peft_run: Run, tmp_path, capsys) -> None:
    out = tmp_path / "traj"
    with pytest.raises(SystemExit) as e:
        main(["trajectory", str(peft_run.out), "--out", str(out), "--format", "png", "-q"])
    assert e.value.code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "trajectory.json", "trajectory.png", "trajectory_heatmap.png",
        "trajectory_metrics.csv", "trajectory_phi.csv",
    ]  # fmt: skip
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == [
        "step",
        "checkpoint",
        "top1",
        "erank",
        "k90",
        "phi_prev",
        "phi_last",
    ]
    traj = json.loads((out / "trajectory.json").read_text())
    first = lines[1].split()  # step, label, then the means over the modules
    assert first[:2] == [str(EVERY), f"checkpoint-{EVERY}"]
    top1 = [r["metrics"]["top1_energy"] for r in traj["modules"] if r["step"] == EVERY]
    assert float(first[2]) == pytest.approx(sum(top1) / len(top1), abs=5e-4)
    last = [p["phi"] for p in traj["phi"]
            if p["relation"] == "last" and p["side"] == "left" and p["step_a"] == EVERY]  # fmt: skip
    assert float(first[6]) == pytest.approx(sum(last) / len(last), abs=5e-4)
    assert first[5] == "-"  # no previous checkpoint
    assert json.loads((out / "trajectory.json").read_text())["checkpoints"][0]["step"] == EVERY


def test_cli_bad_input_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["trajectory", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing: no such file or directory" in err[0]


def test_cli_report_section(peft_run: Run, tmp_path) -> None:
    from spectra.results import load_result

    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as e:
        main(["trajectory", str(peft_run.out), "-o", str(out), "--format", "png", "--report", "-q"])
    assert e.value.code == 0
    page = (out / "report.html").read_text()
    assert "spectra trajectory" in page
    result = load_result(out / "results.json")  # a valid analysis result, one input per step
    assert [i["label"] for i in result["inputs"]] == [f"checkpoint-{s}" for s in STEP_LIST]
    traj = json.loads((out / "trajectory.json").read_text())
    assert [r["metrics"] for r in result["modules"]] == [r["metrics"] for r in traj["modules"]]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full fine-tuning of the tiny classifier, checkpoints (model.safetensors) every 2 steps;
    the base saved with save_pretrained beside the run."""
    from tests.track.training import tiny_classifier, train

    root = tmp_path_factory.mktemp("full-run")
    model = tiny_classifier()
    model.save_pretrained(root / "base")
    train(model, root / "run", steps=4, save_steps=2, lr=1e-3)
    return root


def test_full_model_checkpoints_with_base(full_run: Path, tmp_path, capsys) -> None:
    traj = trajectory(full_run / "run", base=full_run / "base")
    assert [(c["step"], c["kind"]) for c in traj["checkpoints"]] == [(2, "full"), (4, "full")]
    # what `spectra compare BASE checkpoint-2 checkpoint-4` computes (similarity on: the same
    # SVD route with vectors that the trajectory's φ uses)
    run = full_run / "run"
    rows = analyze(
        full_run / "base", [run / "checkpoint-2", run / "checkpoint-4"],
        options=AnalysisOptions(against_base=False),
    )["modules"]  # fmt: skip
    mine = {r["module"]: r["metrics"] for r in traj["modules"] if r["step"] == 4}
    assert mine == {r["module"]: r["metrics"] for r in rows if r["label"] == "checkpoint-4"}
    assert {p["relation"] for p in traj["phi"]} == {"consecutive", "last"}
    with pytest.raises(SystemExit) as e:
        main(["trajectory", str(full_run / "run"), "-o", str(tmp_path / "o"), "-q"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spectra: error:")
