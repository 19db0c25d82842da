"""``spectra trajectory`` on a Trainer run pushed to the Hub (checkpoint-<step>/ folders),
against the local server: the same trajectory as on the same folders on disk."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hub.conftest import ADAPTER_ID, RUN_ID, FakeHub, Repos


def _local_run(repos: Repos, root: Path) -> Path:
    """The run's files as a local Trainer output_dir."""
    repo = repos.repos[RUN_ID]
    for name, data in repo.commits[repo.refs["main"]].items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _steps_and_numbers(out: Path) -> tuple[list[int], list, list]:
    traj = json.loads((out / "trajectory.json").read_text())
    steps = [c["step"] for c in traj["checkpoints"]]
    modules = [
        (m["step"], m["module"], m["singular_values"], m["metrics"]) for m in traj["modules"]
    ]
    phi = [
        (p["step_a"], p["step_b"], p["relation"], p["module"], p["side"], p["phi"])
        for p in traj["phi"]
    ]
    return steps, modules, phi


def test_trajectory_of_a_hub_run_equals_the_local_one(
    online: FakeHub, run_cli, repos: Repos, tmp_path: Path
) -> None:
    hub = run_cli("trajectory", RUN_ID, "--out", tmp_path / "hub", "-q")
    assert hub.code == 0, hub.err
    local_dir = _local_run(repos, tmp_path / "run")
    local = run_cli("trajectory", local_dir, "--out", tmp_path / "local", "-q")
    assert local.code == 0, local.err
    steps, modules, phi = _steps_and_numbers(tmp_path / "hub")
    assert steps == [5, 10]  # by step, not by name (checkpoint-10 sorts before checkpoint-5)
    assert (steps, modules, phi) == _steps_and_numbers(tmp_path / "local")
    assert modules and phi
    fetched = {d for d in online.downloads() if d.startswith(RUN_ID + "/")}
    # only the checkpoint folders' files (README.md not); the two adapter_config.json files
    # are the same bytes, which huggingface_hub's cache stores (and fetches) once
    expected = {
        f"{RUN_ID}/checkpoint-{s}/{f}"
        for s in (5, 10)
        for f in ("adapter_config.json", "adapter_model.safetensors")
    }
    assert fetched <= expected
    assert {f"{RUN_ID}/checkpoint-{s}/adapter_model.safetensors" for s in (5, 10)} <= fetched


def test_checkpoints_given_one_by_one_as_hub_ids(online: FakeHub, run_cli, tmp_path: Path):
    ids = [f"{RUN_ID}/checkpoint-5", f"{RUN_ID}/checkpoint-10"]
    res = run_cli("trajectory", *ids, "--out", tmp_path / "t", "-q")
    assert res.code == 0, res.err
    steps, _, phi = _steps_and_numbers(tmp_path / "t")
    assert steps == [5, 10] and phi


def test_a_hub_repo_without_checkpoint_folders_is_one_checkpoint(
    online: FakeHub, run_cli, tmp_path: Path
) -> None:
    res = run_cli("trajectory", ADAPTER_ID, "--out", tmp_path / "t", "-q")
    assert res.code == 0, res.err
    steps, modules, _ = _steps_and_numbers(tmp_path / "t")
    assert steps == [1] and modules


def test_an_unknown_id_is_one_line(online: FakeHub, run_cli, tmp_path: Path) -> None:
    res = run_cli("trajectory", "hf://test-org/nope", "--out", tmp_path / "t")
    assert res.code == 1
    assert "test-org/nope" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1
