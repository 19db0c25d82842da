"""``spectra figures``, ``spectra report`` and ``spectra diagnose``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spectra.diagnose import SEVERITY, Thresholds, diagnose, render_text
from spectra.errors import EXIT_VERDICT, OptionError
from spectra.io.atomic import check_not_an_input
from spectra.results import load_result, save_result
from spectra_cli import options as o
from spectra_cli import render

Inputs = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="CKPT",
        help="As for compare (omit with --from-json).",
        show_default=False,
    ),
]
FromJson = Annotated[
    Path | None,
    typer.Option("--from-json", help="Redraw from a saved `spectra compare --json` file."),
]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]


def _result_from(
    inputs: list[Path] | None,
    from_json: Path | None,
    out: Path,
    analysis: o.Analysis,
    *,
    command: str,
) -> dict[str, Any]:
    """Either load a saved result or analyse the inputs (exactly one of the two); an output
    directory that cannot be one is refused first, before any work."""
    if out.exists() and not out.is_dir():
        raise OptionError(f"the output {out} is a file, not a directory; pass another output path")
    if from_json is not None:
        if inputs:
            raise OptionError("give either [BASE] CKPT... or --from-json, not both")
        return load_result(from_json)
    if not inputs:
        raise OptionError(
            f"give [BASE] CKPT... or --from-json RESULT.json: spectra {command} --help"
        )
    what = analysis.inputs(inputs, command=command)
    check_not_an_input(out, [what.base, *what.checkpoints])
    result = analysis.run(what)
    for line in render.problems(result):  # skipped / one-sided keys / NaN modules, as compare
        typer.echo(line, err=True)
    return result


@o.analysis_command()
def figures(
    inputs: Inputs = None,
    out: OutDir = Path("figures"),
    from_json: FromJson = None,
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="png, svg, pdf (repeat; default png+svg).")
    ] = None,
    *,
    analysis: o.Analysis,
) -> None:
    """Draw the democratization figures (PNG + SVG) from checkpoints or a saved result."""
    from spectra.plots import all_figures, save_figures

    result = _result_from(inputs, from_json, out, analysis, command="figures")
    written = save_figures(all_figures(result), out, formats=fmt or ("png", "svg"))
    for path in written:
        typer.echo(str(path))


@o.analysis_command()
def report(
    inputs: Inputs = None,
    out: OutDir = Path("spectra-report"),
    from_json: FromJson = None,
    *,
    analysis: o.Analysis,
) -> None:
    """Write one self-contained HTML report (figures embedded) plus JSON and CSV tables."""
    from spectra.report import write_report

    result = _result_from(inputs, from_json, out, analysis, command="report")
    path = write_report(result, out)
    typer.echo(str(path))


@o.takes(o.ANALYSIS, o.THRESHOLDS, similarity=False)
def diagnose_cmd(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="CKPT",
            help="Adapters or checkpoints to check (read as for compare), or folders of "
            "adapters: each is diagnosed on its own, in one run.",
            show_default=False,
        ),
    ],
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help=f"Exit {EXIT_VERDICT} when this verdict is reached "
            f"(repeatable): {', '.join(SEVERITY)}.",
        ),
    ] = None,
    all_modules: Annotated[
        bool, typer.Option("--all", help="List every module, not only flagged ones.")
    ] = False,
    json_out: o.JsonOut = None,
    *,
    analysis: o.Analysis,
    thresholds: Thresholds,
) -> int:
    """Is this adapter dominated by a few directions? A verdict per module and overall.

    Several adapters (or a folder of them) are diagnosed in one run: one verdict each, one
    table, one JSON.
    """
    for v in fail_on or []:
        if v not in SEVERITY:
            raise OptionError(
                f"--fail-on {v!r} is not a verdict; choose from {', '.join(SEVERITY)}"
            )
    what = analysis.inputs(inputs, command="diagnose", expand_folders=True)
    if json_out is not None:
        check_not_an_input(json_out, [what.base, *what.checkpoints])
    result = analysis.run(what)
    diagnosis = diagnose(result, thresholds)
    if json_out is not None:  # before the verdicts: a closed stdout must not lose the file
        save_result({**result, "diagnosis": diagnosis.to_dict()}, json_out)  # one shape
        analysis.say(f"wrote {json_out}")
    typer.echo(render_text(diagnosis, all_modules=all_modules))
    for line in render.problems(result):  # skipped / one-sided keys / NaN modules, as compare
        typer.echo(line, err=True)
    if any(diagnosis.reached(v) for v in fail_on or []):
        return EXIT_VERDICT
    return 0
