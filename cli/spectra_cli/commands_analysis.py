"""``spectra compare`` and ``spectra inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.io.atomic import check_not_an_input
from spectra.loaders import LoadOptions, open_checkpoint, open_tensors
from spectra.results import save_result
from spectra.verdicts.lowrank import check_ranks
from spectra_cli import options as o
from spectra_cli import render
from spectra_cli.inputs import hub_base, local_path

Checkpoints = Annotated[
    list[Path],
    typer.Argument(
        metavar="CKPT",
        help="[BASE] CKPT...: full fine-tunes, LoRA / DoRA / MultiLoRA / kohya / LyCORIS "
        "adapters. A first full checkpoint is the base unless --base is given.",
        show_default=False,
    ),
]


@o.analysis_command()
def compare(
    inputs: Checkpoints,
    json_out: o.JsonOut = None,
    *,
    analysis: o.Analysis,
) -> None:
    """Compare the weight updates of CKPTs: spectra, dominance, subspaces.

    BASE CKPT... (a full checkpoint first), adapters alone, or --base BASE CKPT...
    """
    what = analysis.inputs(inputs, command="compare")
    if json_out is not None:
        check_not_an_input(json_out, [what.base, *what.checkpoints])
    result = analysis.run(what)
    if json_out is not None:  # before the table: a closed stdout must not lose the file
        save_result(result, json_out)
        analysis.say(f"wrote {json_out}")
    typer.echo(render.summary_table(result))
    for line in render.problems(result):
        typer.echo(line, err=True)


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
    quiet: o.Quiet = False,
) -> None:
    """List what a checkpoint holds: kind, modules, ΔW shapes, ranks, scaling, structure."""
    forced = o.kinds_for([kind])[0] if kind else None  # type: ignore[index]
    opts = LoadOptions(kind=forced, lora_alpha=lora_alpha, lora_scale=lora_scale)
    ckpt = local_path(ckpt, quiet=quiet)  # a Hub id is fetched (docs/hub.md)
    base = hub_base(base, [ckpt], opts, want_base=False, quiet=quiet)
    base_src = open_tensors(base) if base is not None else None
    reader = open_checkpoint(ckpt, base=base_src, options=opts)
    full_with_base = base_src is not None and reader.kind == "full"
    ranks = check_ranks(reader, base=base_src) if rank_check and full_with_base else None
    typer.echo(render.inspect_text(reader, ranks))
