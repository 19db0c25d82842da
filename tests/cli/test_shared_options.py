"""The analysis options are declared once and every analysing command takes all of them."""

from __future__ import annotations

import json
import typing

import pytest
import typer
from spectra_cli import options as o

from spectra.errors import OptionError
from spectra.loaders import READERS
from tests.cli.conftest import tree_hash

ANALYSING = ("compare", "figures", "report", "diagnose")


def _flags(annotation: object) -> list[str]:
    """The option names (``--svd``, ``--base-metrics/--no-base-metrics`` split) of one
    Annotated Typer option."""
    info = next(
        m for m in typing.get_args(annotation)[1:] if isinstance(m, typer.models.OptionInfo)
    )
    decls = [info.default, *(info.param_decls or ())]
    return [f for d in decls if isinstance(d, str) for f in d.split("/")]


@pytest.mark.parametrize("command", ANALYSING)
def test_every_analysing_command_lists_every_shared_option(run_cli, command):
    res = run_cli(command, "--help")
    assert res.code == 0, res.err
    flags = [f for _, annotation, _ in o.SHARED for f in _flags(annotation)]
    assert len(flags) > 20
    missing = [f for f in flags if f not in res.out]
    assert not missing, f"{command} --help lacks {missing}"
    for wanted in ("--svd", "--workers", "--no-similarity", "--exclude", "--skip-mismatched"):
        assert wanted in flags


def test_kind_help_and_check_come_from_the_reader_registry(run_cli, monkeypatch):
    help_text = " ".join(run_cli("compare", "--help").out.split())
    for kind in READERS:
        assert kind in help_text
    with pytest.raises(OptionError, match="'nope' is not one of auto, " + ", ".join(READERS)):
        o.kinds_for(["nope"])
    monkeypatch.setitem(READERS, "nope", READERS["lora"])
    assert o.kinds_for(["nope", "auto"]) == ["nope", None]


def test_report_takes_the_analysis_options(ckpts, run_cli, tmp_path):
    out = tmp_path / "rep"
    flags = ["--no-similarity", "--exclude", "value", "--workers", "1", "-q"]
    res = run_cli("report", ckpts.base, ckpts.lora, ckpts.multilora, "--out", out, *flags)
    assert res.code == 0, res.err
    saved = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    result = next(r for r in saved if "settings" in r)
    assert result["settings"]["similarity"] is False and result["similarity"] == []
    assert result["settings"]["exclude"] == "value"
    assert {m["module"].rsplit(".", 1)[-1] for m in result["modules"]} == {"query"}


def test_exclude_leaves_modules_out_and_is_recorded_only_when_given(ckpts, run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("compare", ckpts.base, ckpts.lora, "--json", a, "-q").code == 0
    res = run_cli("compare", ckpts.base, ckpts.lora, "--exclude", r"layer\.0\.", "--json", b, "-q")
    assert res.code == 0, res.err
    full, cut = json.loads(a.read_text()), json.loads(b.read_text())
    assert "exclude" not in full["settings"]
    assert cut["settings"]["exclude"] == r"layer\.0\."
    assert [m for m in full["modules"] if ".layer.0." not in m["module"]] == cut["modules"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--exclude", "("], "--exclude '(' is not a valid regex"),
        (["--exclude", "."], "--exclude '.' leaves none of the 4 modules"),
        (["--modules", "query", "--exclude", "query"], "with --exclude 'query' leaves none"),
        (["--kind", "bogus"], "--kind 'bogus' is not one of auto, full"),
        (["--kind", "lora", "--kind", "lora"], "got 2 --kind for 1 checkpoints"),
        (["--workers", "0"], "workers"),
        (["--svd", "fast"], "--svd must be exact or randomized"),
        (["--lora-alpha", "2", "--lora-scale", "1"], "not both"),
        (["--base", "/nonexistent/base.safetensors"], "/nonexistent/base.safetensors: no such"),
    ],
)
@pytest.mark.parametrize("command", ANALYSING)
def test_bad_shared_option_one_line_exit_1(ckpts, run_cli, tmp_path, command, args, needle):
    untouched = {p: tree_hash(p) for p in (ckpts.base, ckpts.lora)}
    out = ["--out", tmp_path / "o"] if command in ("figures", "report") else []
    res = run_cli(command, ckpts.base, ckpts.lora, *out, *args)
    assert res.code == 1, (res.code, res.err)
    assert res.err.startswith("spectra: error:") and len(res.err.strip().splitlines()) == 1
    assert needle in res.err, res.err
    assert {p: tree_hash(p) for p in untouched} == untouched
    assert not (tmp_path / "o").exists()


def test_decorator_refuses_unknown_defaults_and_redeclared_options():
    with pytest.raises(TypeError, match="not options of"):
        o.analysis_command(bogus=1)

    def redeclares(top_k: int = 3, *, analysis: o.Analysis) -> None: ...

    with pytest.raises(TypeError, match="redeclares group options"):
        o.analysis_command()(redeclares)


def test_every_threshold_is_a_diagnose_option_with_the_library_default(run_cli):
    from dataclasses import fields

    from spectra.diagnose import Thresholds

    res = run_cli("diagnose", "--help")
    assert res.code == 0, res.err
    names = [f.name for f in fields(Thresholds)]
    assert list(o.THRESHOLD_HELP) == names
    for (name, annotation, default), f in zip(
        o.THRESHOLDS.options, fields(Thresholds), strict=True
    ):
        assert (name, default) == (f.name, f.default)
        assert _flags(annotation) == ["--" + name.replace("_", "-")]
        assert _flags(annotation)[0] in res.out


def test_threshold_options_reach_the_verdict(ckpts, run_cli, tmp_path):
    """The same adapter flips between dominated and not with one threshold option; the JSON
    records the thresholds it was judged by."""
    verdicts = {}
    for top1 in ("0.0", "1.0"):
        out = tmp_path / f"d{top1}.json"
        args = ["diagnose", ckpts.lora, "-q", "--json", out, "--dominated-top1-energy", top1]
        res = run_cli(*args, "--dominated-erank-ratio", "0", "--dominated-min-rank", "1")
        assert res.code == 0, res.err
        diagnosis = json.loads(out.read_text())["diagnosis"]
        assert diagnosis["thresholds"]["dominated_top1_energy"] == float(top1)
        assert diagnosis["thresholds"]["dominated_min_rank"] == 1
        verdicts[top1] = {m["verdict"] for m in diagnosis["modules"]}
    assert verdicts["0.0"] == {"dominated"}
    assert "dominated" not in verdicts["1.0"]


def test_command_modules_do_not_import_the_app():
    import ast
    from pathlib import Path

    import spectra_cli

    folder = Path(spectra_cli.__file__).parent
    modules = sorted(folder.glob("commands_*.py"))
    assert len(modules) >= 3
    for path in modules:
        tree = ast.parse(path.read_text())
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        names = {
            alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for alias in n.names
        }
        assert "spectra_cli.app" not in imported and "app" not in names, path.name
