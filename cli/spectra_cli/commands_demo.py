"""``spectra demo``: train FT / LoRA / MultiLoRA on a real model, then analyse and draw."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli import options as o
from spectra_cli import render


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path(
        "spectra-demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Plumbing-sized run (~1 min); numbers not meaningful.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data split, order and init.")] = 0,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            help="Torch threads. Training reproduces bit for bit only at the same count; the "
            "default 1 does on any machine with the same CPU type and library versions.",
        ),
    ] = 1,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")
    ] = "auto",
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain", help="Train again even if a run with the same settings is cached in OUT."
        ),
    ] = False,
    quiet: o.Quiet = False,
) -> None:
    """Fine-tune all-MiniLM-L6-v2 three ways, compare the updates, write figures and a report."""
    from spectra.demo import DemoOptions, run_demo

    say = (lambda _msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    res = run_demo(
        DemoOptions(
            out=out, quick=quick, seed=seed, threads=threads, device=device, retrain=retrain
        ),
        say=say,
        progress=o.Progress(quiet),
    )
    typer.echo("Held-out accuracy per task (chance, linear probe on the frozen base, each method):")
    typer.echo(res.recipe.table())
    typer.echo("")
    typer.echo("Spectral summary of the encoder updates (ΔW of every adapted linear):")
    typer.echo(render.summary_table(res.result))
    typer.echo("")
    typer.echo(f"report:  {res.report}")
    typer.echo(f"figures: {res.figures_dir}")
    typer.echo(f"result:  {res.result_json}")
