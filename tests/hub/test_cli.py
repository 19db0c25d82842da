"""The command line with Hub ids, in-process against the local server: the same numbers as on
the local folders, only the needed shards fetched, the named base used and recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.hub.conftest import (
    ADAPTED_LAYER,
    ADAPTER_ID,
    BASE_ID,
    INDEX,
    NESTED_ID,
    TARGETS,
    FakeHub,
    Repos,
)


def _needed(repos: Repos) -> set[str]:
    return {INDEX, "config.json", *repos.needed_shards()}


def _fetched(hub: FakeHub, repo: str) -> set[str]:
    return {d.removeprefix(repo + "/") for d in hub.downloads() if d.startswith(repo + "/")}


def _numbers(result: dict) -> list:
    return [
        (m["label"], m["module"], m["singular_values"], m.get("base_metrics"))
        for m in result["modules"]
    ]


def test_inspect_a_hub_adapter(online: FakeHub, run_cli, repos: Repos) -> None:
    hub = run_cli("inspect", ADAPTER_ID)
    local = run_cli("inspect", repos.adapter_dir)
    assert hub.code == 0 and local.code == 0, hub.err
    for t in TARGETS:
        assert f"encoder.layer.{ADAPTED_LAYER}.attention.self.{t}" in hub.out
    assert hub.out.replace(str(hub_path := _adapter_path(online)), "X") == local.out.replace(
        str(repos.adapter_dir), "X"
    ), hub_path
    assert _fetched(online, ADAPTER_ID) == {"adapter_config.json", "adapter_model.safetensors"}
    assert f"downloading {ADAPTER_ID}@" in hub.err


def _adapter_path(hub: FakeHub) -> Path:
    from spectra.hub import resolve

    return resolve(ADAPTER_ID, quiet=True)


def test_compare_with_a_hub_base(online: FakeHub, run_cli, repos: Repos, tmp_path: Path) -> None:
    out, ref = tmp_path / "hub.json", tmp_path / "local.json"
    hub = run_cli("compare", "--base", BASE_ID, ADAPTER_ID, "--json", out)
    assert hub.code == 0, hub.err
    assert _fetched(online, BASE_ID) == _needed(repos)  # index, config and 1-2 of 7 shards
    local = run_cli(
        "compare", "--base", repos.base_dir, repos.adapter_dir, "-l", "tiny-lora", "--json", ref
    )
    assert local.code == 0, local.err
    got, want = json.loads(out.read_text()), json.loads(ref.read_text())
    assert _numbers(got) == _numbers(want) and got["settings"]["against_base"]
    assert got["base"]["path"] == f"hf://{BASE_ID}"
    assert got["base"]["hub"]["commit"] == repos.repos[BASE_ID].refs["main"]
    assert got["base"]["hub"]["partial"].endswith("of 7 shards")
    assert (
        got["inputs"][0]["path"] == f"hf://{ADAPTER_ID}"
        and got["inputs"][0]["label"] == "tiny-lora"
    )


def test_diagnose_uses_the_base_the_adapter_names(
    online: FakeHub, run_cli, repos: Repos, tmp_path: Path
) -> None:
    out = tmp_path / "d.json"
    res = run_cli("diagnose", ADAPTER_ID, "--json", out)
    assert res.code == 0, res.err
    commit = repos.repos[BASE_ID].refs["main"]
    assert (
        f"base: hf://{BASE_ID} (commit {commit[:12]}), named in the adapter config of "
        f"hf://{ADAPTER_ID}"
    ) in res.err
    got = json.loads(out.read_text())
    assert got["settings"]["against_base"] and got["base"]["hub"]["commit"] == commit
    assert got["base"]["named_by"] == f"hf://{ADAPTER_ID}"
    assert _fetched(online, BASE_ID) == _needed(repos)
    assert all(m["base_metrics"] is not None for m in got["modules"])


def test_a_local_adapter_does_not_go_online(online: FakeHub, run_cli, repos: Repos) -> None:
    res = run_cli("compare", repos.adapter_dir)  # its config names test-org/tiny-base
    assert res.code == 0, res.err
    assert online.requests == []


def test_bad_ids_are_one_line_and_exit_1(online: FakeHub, run_cli) -> None:
    for args in (
        ("inspect", "hf://test-org/missing"),
        ("inspect", f"{ADAPTER_ID}@v9"),
        ("compare", "--base", "hf://test-org//x", ADAPTER_ID),
        ("compare", "--base", ADAPTER_ID, ADAPTER_ID),
    ):
        res = run_cli(*args)
        assert res.code == 1, (args, res.err)
        lines = [ln for ln in res.err.splitlines() if ln.startswith("spectra: error:")]
        assert len(lines) == 1 and "Traceback" not in res.err, res.err


def test_environment_variables_alone(fake_hub: FakeHub, repos: Repos, tmp_path: Path) -> None:
    """A fresh process configured only by the environment huggingface_hub documents."""
    cache = tmp_path / "elsewhere"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=fake_hub.url, HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "spectra", "inspect", f"hf://{ADAPTER_ID}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (cache / "models--test-org--tiny-lora" / "refs" / "main").is_file()
    assert not (tmp_path / "home" / "hub").exists()  # HF_HUB_CACHE wins over HF_HOME
    offline = subprocess.run(
        cmd, capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, timeout=300
    )
    fake_hub.requests.clear()
    assert offline.returncode == 0 and offline.stdout == out.stdout, offline.stderr
    assert fake_hub.requests == []


def test_progress_and_quiet(online: FakeHub, run_cli) -> None:
    quiet = run_cli("inspect", "-q", f"hf://{NESTED_ID}/runs/r2")
    assert quiet.code == 0 and quiet.err == "", quiet.err
    loud = run_cli("inspect", ADAPTER_ID)
    assert loud.code == 0
    assert loud.err.splitlines() == [
        f"downloading {ADAPTER_ID}@{online.repos[ADAPTER_ID].refs['main'][:12]}: {name}"
        for name in ("adapter_config.json", "adapter_model.safetensors")
    ]  # one line per file downloaded (huggingface_hub's bars are off in these tests)
