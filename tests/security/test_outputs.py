"""Outputs: written atomically (a failure or an interrupt midway leaves the old file or none,
and no temporary file), refused with one message when they cannot be written, and
byte-identical for the same inputs. Inputs never change (every run_cli call checks hashes)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

EXIT_INTERRUPTED = 130


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def _fail_midway(exc: BaseException):
    """A writer that puts half of its bytes into the file it was given, then fails."""

    def write(fig, target, fmt) -> None:
        Path(target).write_bytes(b"\x89PNG half a figure")
        raise exc

    return write


@pytest.mark.parametrize(
    ("exc", "code", "said"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    ],
    ids=["disk-full", "ctrl-c"],
)
def test_figure_writer_failing_midway_leaves_old_file_and_no_temp(
    ckpts, run_cli, tmp_path, monkeypatch, exc, code, said
) -> None:
    out = tmp_path / "figs"
    out.mkdir()
    old = out / "fig1_histogram.png"
    old.write_bytes(b"the old figure")
    monkeypatch.setattr("spectra.plots.output._save", _fail_midway(exc))
    res = run_cli("figures", ckpts.base, ckpts.lora, "-q", "-o", out, "--format", "png")
    assert res.code == code, res.err
    assert res.err.strip().splitlines()[-1].startswith(f"spectra: {'error' if code == 1 else said}")
    assert said in res.err and "Traceback" not in res.err
    if code == 1:
        assert str(old) in res.err  # names the file it could not write
    assert old.read_bytes() == b"the old figure"
    assert sorted(p.name for p in out.iterdir()) == ["fig1_histogram.png"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_json_writer_failing_midway_keeps_the_old_result(
    ckpts, run_cli, tmp_path, monkeypatch, exc
) -> None:
    target = tmp_path / "r.json"
    target.write_text('{"old": true}\n')
    real = Path.write_text

    def half(self: Path, data: str, *args, **kwargs) -> int:
        if self.name.startswith(".r.json."):  # the temporary file beside r.json
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise exc
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half)
    res = run_cli("compare", ckpts.base, ckpts.lora, "-q", "--json", target)
    assert res.code == (1 if isinstance(exc, OSError) else EXIT_INTERRUPTED), res.err
    assert "Traceback" not in res.err
    assert target.read_text() == '{"old": true}\n'
    assert _leftovers(tmp_path) == []


def test_interrupted_report_leaves_no_partial_page(ckpts, run_cli, tmp_path, monkeypatch) -> None:
    out = tmp_path / "report"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("spectra.report.html.render_html", interrupted)
    res = run_cli("report", ckpts.base, ckpts.lora, "-q", "-o", out)
    assert res.code == EXIT_INTERRUPTED and "interrupted" in res.err
    assert not (out / "report.html").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: (d / "out").mkdir() or ["--json", d / "out"], "is a directory"),
        (lambda d: (d / "f").write_text("x") and ["--json", d / "f" / "r.json"], "is a file"),
    ],
    ids=["json-is-a-directory", "json-parent-is-a-file"],
)
def test_unwritable_outputs_are_refused_by_name(ckpts, run_cli, tmp_path, make, needle) -> None:
    args = make(tmp_path)
    res = run_cli("compare", ckpts.base, ckpts.lora, "-q", *args)
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1 and lines[0].startswith("spectra: error:")
    assert str(args[-1]) in lines[0] and needle in lines[0]
    assert _leftovers(tmp_path) == []


def test_figures_out_dir_that_is_a_file_is_refused(ckpts, run_cli, tmp_path) -> None:
    blocker = tmp_path / "figs"
    blocker.write_text("not a directory")
    res = run_cli("figures", ckpts.base, ckpts.lora, "-q", "-o", blocker)
    assert res.code == 1 and res.err.startswith("spectra: error:") and str(blocker) in res.err
    assert blocker.read_text() == "not a directory"


def test_same_inputs_give_byte_identical_json_and_report(ckpts, run_cli, tmp_path) -> None:
    inputs = (ckpts.base, ckpts.full, ckpts.lora, ckpts.multilora)
    jsons = []
    for i in range(2):
        target = tmp_path / f"r{i}.json"
        assert run_cli("compare", *inputs, "-q", "--json", target).code == 0
        jsons.append(target.read_bytes())
    assert jsons[0] == jsons[1]
    reports = []
    for i in range(2):
        out = tmp_path / f"report{i}"
        assert run_cli("report", ckpts.base, ckpts.lora, "-q", "-o", out).code == 0
        reports.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert reports[0] == reports[1]
    assert {"report.html", "results.json"} <= set(reports[0])


def test_an_output_can_never_overwrite_or_enter_an_input(ckpts, run_cli, tmp_path) -> None:
    """--json naming a checkpoint, --out inside an adapter directory: refused before any work
    (run_cli checks that every input kept its hash)."""
    cases = [
        ("compare", ckpts.base, ckpts.lora, "-q", "--json", ckpts.base),
        ("compare", ckpts.base, ckpts.lora, "-q", "--json", ckpts.lora / "r.json"),
        (
            "diagnose",
            ckpts.lora,
            "--base",
            ckpts.base,
            "--json",
            ckpts.lora / "adapter_config.json",
        ),
        ("figures", ckpts.base, ckpts.lora, "-q", "-o", ckpts.lora),
        ("report", ckpts.base, ckpts.lora, "-q", "-o", ckpts.lora / "report"),
    ]
    for args in cases:
        res = run_cli(*args)
        lines = res.err.strip().splitlines()
        assert res.code == 1 and len(lines) == 1, (args, res.err)
        assert "spectra never modifies its inputs" in lines[0] and str(args[-1]) in lines[0]
