"""``spectra compare`` and ``spectra inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.analysis import analyze
from spectra.engine.randomized import DEFAULT_OVERSAMPLE, DEFAULT_POWER_ITERS
from spectra.io.atomic import check_not_an_input
from spectra.loaders import LoadOptions, open_checkpoint, open_tensors
from spectra.loaders.lowrank import check_ranks
from spectra.parallel import make_executor
from spectra.results import save_result
from spectra_cli import options as o
from spectra_cli import render
from spectra_cli.app import app


@app.command()
def compare(
    base: Annotated[Path, typer.Argument(help="Base checkpoint (file or directory).")],
    ckpts: Annotated[
        list[Path], typer.Argument(help="Full fine-tunes, LoRA adapters or MultiLoRA checkpoints.")
    ],
    label: o.Label = None,
    kind: o.Kind = None,
    modules: o.Modules = None,
    top_k: o.TopK = 16,
    json_out: o.JsonOut = None,
    dtype: o.DType = "float32",
    device: o.Device = "cpu",
    base_metrics: o.BaseMetrics = True,
    lora_alpha: o.LoraAlpha = None,
    lora_scale: o.LoraScale = None,
    quiet: o.Quiet = False,
    similarity: o.Similarity = True,
    svd: o.Svd = "exact",
    oversample: o.Oversample = DEFAULT_OVERSAMPLE,
    power_iters: o.PowerIters = DEFAULT_POWER_ITERS,
    workers: o.Workers = 1,
    executor: o.Executor = None,
    scheduler: o.Scheduler = None,
    threads: o.Threads = None,
) -> None:
    """Compare the weight updates of CKPTs made from BASE: spectra, dominance, subspaces."""
    opts = o.analysis_options(
        modules=modules,
        top_k=top_k,
        dtype=dtype,
        device=device,
        base_metrics=base_metrics,
        similarity=similarity,
        svd=svd,
        oversample=oversample,
        power_iters=power_iters,
    )
    run = o.execution_options(
        workers=workers, executor=executor, scheduler=scheduler, threads=threads
    )
    if json_out is not None:
        check_not_an_input(json_out, [base, *ckpts])
    with make_executor(run) as pool:
        result = analyze(
            base,
            ckpts,
            labels=label,
            kinds=o.kinds_for(kind, len(ckpts)),
            options=opts,
            lora_alpha=lora_alpha,
            lora_scale=lora_scale,
            progress=o.Progress(quiet),
            executor=pool,
        )
    typer.echo(render.summary_table(result))
    for line in render.problems(result):
        typer.echo(line, err=True)
    if json_out is not None:
        save_result(result, json_out)
        typer.echo(f"wrote {json_out}", err=True)


@app.command()
def inspect(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint, adapter directory or file.")],
    base: Annotated[
        Path | None, typer.Option("--base", help="Base checkpoint (needed for full fine-tunes).")
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Force the kind.")] = None,
    lora_alpha: o.LoraAlpha = None,
    lora_scale: o.LoraScale = None,
    rank_check: Annotated[
        bool,
        typer.Option(
            "--rank-check/--no-rank-check",
            help="For a full checkpoint with --base: the numerical rank of every ΔW (singular "
            "values of each module), flagging a merged adapter (rank ≪ min(out, in)).",
        ),
    ] = True,
) -> None:
    """List what a checkpoint holds: kind, modules, ΔW shapes, ranks, scaling, structure."""
    forced = o.kinds_for([kind], 1)[0] if kind else None
    base_src = open_tensors(base) if base is not None else None
    opts = LoadOptions(kind=forced, lora_alpha=lora_alpha, lora_scale=lora_scale)
    reader = open_checkpoint(ckpt, base=base_src, options=opts)
    full_with_base = base_src is not None and reader.kind == "full"
    ranks = check_ranks(reader) if rank_check and full_with_base else None
    typer.echo(render.inspect_text(reader, ranks))
