"""``spectra trajectory``: metrics and subspace movement across the checkpoints of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.analysis import AnalysisOptions
from spectra.hub import run_checkpoint_ids
from spectra.io.atomic import check_not_an_input
from spectra.loaders import LoadOptions
from spectra.track.trajectory import result_of
from spectra.track.trajectory import trajectory as compute_trajectory
from spectra.track.trajectory_files import render_text, save_trajectory
from spectra_cli import options as o
from spectra_cli.inputs import local_path

RunOrCheckpoints = Annotated[
    list[Path],
    typer.Argument(
        metavar="RUN_DIR|CKPT",
        help="An HF Trainer output folder (its checkpoint-<step>/ folders, by step; each an "
        "adapter or a full model), or checkpoints in training order; local or Hub ids (a "
        "repo of checkpoint-<step>/ folders, as pushed with hub_strategy='all_checkpoints').",
        show_default=False,
    ),
]


def trajectory(
    inputs: RunOrCheckpoints,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Base model (needed for full-model checkpoints)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path(
        "spectra-trajectory"
    ),
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="png, svg, pdf (repeat; default png+svg).")
    ] = None,
    modules: o.Modules = None,
    exclude: o.Exclude = None,
    top_k: o.TopK = 16,
    dtype: o.DType = "float32",
    device: o.Device = "cpu",
    lora_alpha: o.LoraAlpha = None,
    lora_scale: o.LoraScale = None,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Also write report.html: the spectra report of every checkpoint (verdicts, "
            "tables, figures), the trajectory figures first.",
        ),
    ] = False,
    quiet: o.Quiet = False,
) -> None:
    """Dominance metrics per checkpoint and φ(k, k) between consecutive checkpoints and
    against the last: JSON, CSV and two figures in --out."""
    # lazy: matplotlib only when drawing; at module level it slows every command's start-up
    from spectra.plots.output import save_figures
    from spectra.plots.trajectory import trajectory_figures

    check_not_an_input(out, [base, *inputs])
    # one Hub repo of checkpoint-<step>/ folders stands for those folders, by step
    run = run_checkpoint_ids(inputs[0]) if len(inputs) == 1 else None
    checkpoints = [local_path(p, quiet=quiet) for p in run or inputs]
    base = None if base is None else local_path(base, quiet=quiet)
    options = AnalysisOptions(
        top_k=top_k, modules=modules, exclude=exclude, dtype=dtype, device=device,
        against_base=False, similarity=False,
    )  # fmt: skip
    load = LoadOptions(lora_alpha=lora_alpha, lora_scale=lora_scale)
    traj = compute_trajectory(
        checkpoints, base=base, options=options, load=load, progress=o.Progress(quiet)
    )
    written = save_trajectory(traj, out)
    figures = trajectory_figures(traj)
    written += save_figures(figures, out, formats=fmt or ("png", "svg"))
    if report:  # lazy: the report and its figures only when asked for
        from spectra.plots import all_figures
        from spectra.report import write_report

        result = result_of(traj)
        figures = {**figures, **all_figures(result)}
        written.append(write_report(result, out, figures=figures, title="spectra trajectory"))
    typer.echo(render_text(traj), nl=False)
    if not quiet:
        for path in written:
            typer.echo(f"wrote {path}", err=True)
