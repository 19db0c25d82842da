"""Unix manners: -q everywhere, a closed stdout ends quietly with 141, several adapters in one
`spectra diagnose` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli.conftest import tree_hash


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "{base}", "{lora}"],
        ["diagnose", "{lora}"],
        ["diagnose", "{lora}", "--base", "{base}"],
        ["figures", "{lora}", "--out", "{tmp}/f", "--format", "png"],
        ["report", "{lora}", "--out", "{tmp}/r"],
        ["inspect", "{lora}"],
    ],
)
def test_quiet_on_every_command_keeps_only_warnings(ckpts, run_cli, tmp_path, args):
    values = {"base": ckpts.base, "lora": ckpts.lora, "tmp": tmp_path}
    argv = [a.format(**values) for a in args]
    loud = run_cli(*argv, "--json", tmp_path / "r.json") if args[0] == "compare" else run_cli(*argv)
    quiet = run_cli(*argv, "-q")
    assert loud.code == quiet.code == 0, quiet.err
    assert "\r" not in quiet.err and "wrote" not in quiet.err  # no progress, no notices
    assert set(quiet.err.splitlines()) <= set(loud.err.splitlines())  # the warnings stay
    if args[0] in ("compare", "diagnose"):
        assert "\r[1/4]" in loud.err  # the progress line that -q removes
        assert quiet.out == loud.out
    if args[0] == "compare":
        assert "wrote" in loud.err


def test_demo_takes_quiet(run_cli):
    assert "--quiet" in run_cli("demo", "--help").out


def _closed_stdout(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run spectra with a stdout pipe whose reader is already gone (`spectra … | head`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "spectra", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=180,
        )
    finally:
        os.close(write)


def test_closed_stdout_ends_quietly_with_141(ckpts, tmp_path):
    out = tmp_path / "r.json"
    res = _closed_stdout("compare", str(ckpts.base), str(ckpts.lora), "-q", "--json", str(out))
    assert res.returncode == 141, res.stderr
    assert res.stderr == b""
    assert json.loads(out.read_text())["inputs"][0]["kind"] == "lora"  # written before stdout
    res = _closed_stdout("inspect", str(ckpts.lora))
    assert (res.returncode, res.stderr) == (141, b"")


def _diagnose_json(run_cli, tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    res = run_cli("diagnose", *args, "--json", out, "-q")
    assert res.code == 0, res.err
    return res, json.loads(out.read_text())


def test_diagnose_many_adapters_one_table_one_json(ckpts, adapters, run_cli, tmp_path):
    paths = (ckpts.lora, adapters.plain, ckpts.multilora)
    before = {p: tree_hash(p) for p in paths}
    res, many = _diagnose_json(run_cli, tmp_path, "many", *paths)
    labels = [m["label"] for m in many["diagnosis"]["methods"]]
    assert labels == ["lora", "plain", "multilora"]
    table = res.out.split("rules:")[0].splitlines()
    assert table[2].split()[:2] == ["method", "kind"]
    assert [row.split()[0] for row in table[4:7]] == labels
    assert many["similarity"] == []  # diagnose compares no pair by default
    # each adapter's rows are those of diagnosing it alone
    for path, label in zip(paths, labels, strict=True):
        _, alone = _diagnose_json(run_cli, tmp_path, label, path)
        assert alone["modules"] == [m for m in many["modules"] if m["label"] == label]
        assert alone["diagnosis"]["methods"] == [
            m for m in many["diagnosis"]["methods"] if m["label"] == label
        ]
    assert {p: tree_hash(p) for p in paths} == before


def test_diagnose_a_folder_of_adapters(adapters, run_cli, tmp_path):
    before = tree_hash(adapters.folder)
    _, result = _diagnose_json(run_cli, tmp_path, "folder", adapters.folder)
    assert [m["label"] for m in result["diagnosis"]["methods"]] == ["lora", "plain"]
    assert [i["path"] for i in result["inputs"]] == [
        str(adapters.folder / "lora"),
        str(adapters.folder / "plain.pt"),
    ]
    assert tree_hash(adapters.folder) == before


def test_diagnose_an_empty_folder_is_refused(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli("diagnose", tmp_path / "empty")
    assert res.code == 1 and str(tmp_path / "empty") in res.err
    assert len(res.err.strip().splitlines()) == 1
