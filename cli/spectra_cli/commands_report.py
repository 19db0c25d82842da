"""``spectra figures``, ``spectra report`` and ``spectra diagnose``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spectra.analysis import analyze
from spectra.diagnose import SEVERITY, Thresholds, diagnose, render_text
from spectra.errors import EXIT_VERDICT, OptionError
from spectra.io.atomic import check_not_an_input
from spectra.results import load_result, save_result
from spectra_cli import options as o
from spectra_cli import render
from spectra_cli.app import app

Inputs = Annotated[
    list[Path] | None,
    typer.Argument(help="BASE CKPT [CKPT ...] (omit with --from-json).", show_default=False),
]
FromJson = Annotated[
    Path | None,
    typer.Option("--from-json", help="Redraw from a saved `spectra compare --json` file."),
]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]


def _result_from(
    inputs: list[Path] | None,
    from_json: Path | None,
    *,
    label: list[str] | None,
    kind: list[str] | None,
    modules: str | None,
    top_k: int,
    dtype: str,
    device: str,
    base_metrics: bool,
    quiet: bool,
    lora_alpha: float | None,
    lora_scale: float | None,
) -> dict[str, Any]:
    """Either load a saved result or analyse BASE CKPT... (exactly one of the two)."""
    if from_json is not None:
        if inputs:
            raise OptionError("give either BASE CKPT... or --from-json, not both")
        return load_result(from_json)
    if not inputs or len(inputs) < 2:
        raise OptionError("give BASE and at least one CKPT, or --from-json RESULT.json")
    base, ckpts = inputs[0], inputs[1:]
    opts = o.analysis_options(
        modules=modules, top_k=top_k, dtype=dtype, device=device, base_metrics=base_metrics
    )
    result = analyze(
        base,
        ckpts,
        labels=label,
        kinds=o.kinds_for(kind, len(ckpts)),
        options=opts,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
        progress=o.Progress(quiet),
    )
    for line in render.problems(result):  # skipped / one-sided keys / NaN modules, as compare
        typer.echo(line, err=True)
    return result


@app.command()
def figures(
    inputs: Inputs = None,
    out: OutDir = Path("figures"),
    from_json: FromJson = None,
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="png, svg, pdf (repeat; default png+svg).")
    ] = None,
    label: o.Label = None,
    kind: o.Kind = None,
    modules: o.Modules = None,
    top_k: o.TopK = 16,
    dtype: o.DType = "float32",
    device: o.Device = "cpu",
    base_metrics: o.BaseMetrics = True,
    lora_alpha: o.LoraAlpha = None,
    lora_scale: o.LoraScale = None,
    quiet: o.Quiet = False,
) -> None:
    """Draw the democratization figures (PNG + SVG) from checkpoints or a saved result."""
    from spectra.plots import all_figures, save_figures

    check_not_an_input(out, inputs or [])
    result = _result_from(
        inputs,
        from_json,
        label=label,
        kind=kind,
        modules=modules,
        top_k=top_k,
        dtype=dtype,
        device=device,
        base_metrics=base_metrics,
        quiet=quiet,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
    )
    written = save_figures(all_figures(result), out, formats=fmt or ("png", "svg"))
    for path in written:
        typer.echo(str(path))


@app.command()
def report(
    inputs: Inputs = None,
    out: OutDir = Path("spectra-report"),
    from_json: FromJson = None,
    label: o.Label = None,
    kind: o.Kind = None,
    modules: o.Modules = None,
    top_k: o.TopK = 16,
    dtype: o.DType = "float32",
    device: o.Device = "cpu",
    base_metrics: o.BaseMetrics = True,
    lora_alpha: o.LoraAlpha = None,
    lora_scale: o.LoraScale = None,
    quiet: o.Quiet = False,
) -> None:
    """Write one self-contained HTML report (figures embedded) plus JSON and CSV tables."""
    from spectra.report import write_report

    check_not_an_input(out, inputs or [])
    result = _result_from(
        inputs,
        from_json,
        label=label,
        kind=kind,
        modules=modules,
        top_k=top_k,
        dtype=dtype,
        device=device,
        base_metrics=base_metrics,
        quiet=quiet,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
    )
    path = write_report(result, out)
    typer.echo(str(path))


@app.command(name="diagnose")
def diagnose_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Adapter or checkpoint to check.")],
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="Base checkpoint: adds amplification and intruder checks "
            "(required for full fine-tunes).",
        ),
    ] = None,
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help=f"Exit {EXIT_VERDICT} when this verdict is reached "
            f"(repeatable): {', '.join(SEVERITY)}.",
        ),
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Force the kind.")] = None,
    all_modules: Annotated[
        bool, typer.Option("--all", help="List every module, not only flagged ones.")
    ] = False,
    top1: Annotated[
        float,
        typer.Option("--dominated-top1-energy", help="Dominated when top-1 energy share ≥ this."),
    ] = Thresholds.dominated_top1_energy,
    erank: Annotated[
        float,
        typer.Option(
            "--dominated-erank-ratio", help="Dominated when effective rank / rank ≤ this."
        ),
    ] = Thresholds.dominated_erank_ratio,
    collapsed: Annotated[
        float,
        typer.Option(
            "--collapsed-phi", help="MultiLoRA collapsed when mean inter-module φ ≥ this."
        ),
    ] = Thresholds.collapsed_phi,
    amplification: Annotated[
        float,
        typer.Option("--amplification", help="Amplified when the amplification factor ≥ this."),
    ] = Thresholds.amplification,
    intruders: Annotated[
        int,
        typer.Option(
            "--intruder-count", help="Intruders when at least this many intruder dimensions."
        ),
    ] = Thresholds.intruder_count,
    share: Annotated[
        float,
        typer.Option(
            "--overall-share", help="A method gets a verdict when this share of its modules do."
        ),
    ] = Thresholds.overall_share,
    json_out: o.JsonOut = None,
    lora_alpha: o.LoraAlpha = None,
    lora_scale: o.LoraScale = None,
    dtype: o.DType = "float32",
    device: o.Device = "cpu",
) -> int:
    """Is this adapter dominated by a few directions? A verdict per module and overall."""
    thresholds = Thresholds(
        dominated_top1_energy=top1,
        dominated_erank_ratio=erank,
        collapsed_phi=collapsed,
        amplification=amplification,
        intruder_count=intruders,
        overall_share=share,
    )
    for v in fail_on or []:
        if v not in SEVERITY:
            raise OptionError(
                f"--fail-on {v!r} is not a verdict; choose from {', '.join(SEVERITY)}"
            )
    if json_out is not None:
        check_not_an_input(json_out, [ckpt, base])
    opts = o.analysis_options(
        modules=None, top_k=16, dtype=dtype, device=device, base_metrics=base is not None
    )
    result = analyze(
        base,
        [ckpt],
        kinds=o.kinds_for([kind], 1) if kind else None,
        options=opts,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
        progress=o.Progress(True),
    )
    diagnosis = diagnose(result, thresholds)
    typer.echo(render_text(diagnosis, all_modules=all_modules))
    for line in render.problems(result):  # skipped / one-sided keys / NaN modules, as compare
        typer.echo(line, err=True)
    if json_out is not None:
        save_result({"diagnosis": diagnosis.to_dict(), "result": result}, json_out)
    if any(diagnosis.reached(v) for v in fail_on or []):
        return EXIT_VERDICT
    return 0
