"""``spectra study``: the demo's methods over several seeds, the ablation and the claims table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.errors import OptionError
from spectra_cli import options as o


def _seeds(text: str | None, flag: str) -> tuple[int, ...] | None:
    """``"0,1,2"`` → (0, 1, 2); None stays None."""
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OptionError(
            f"{flag} takes integers separated by commas, e.g. 0,1,2; got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise OptionError(f"{flag} needs distinct seeds, e.g. 0,1,2; got {text!r}")
    return seeds


def study(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Study folder (runs, caches, outputs).")
    ] = Path("spectra-study"),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Plumbing size (what the tests run); numbers mean nothing."),
    ] = False,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="Main seeds, e.g. 0,1,2,3,4 (default: the size's)."),
    ] = None,
    ablation_seeds: Annotated[
        str | None,
        typer.Option("--ablation-seeds", help="Seeds of the ablation arms, among --seeds."),
    ] = None,
    no_ablation: Annotated[
        bool, typer.Option("--no-ablation", help="Train and report the three methods only.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Runs trained at once, one thread each (default: cores)."),
    ] = None,
    no_train: Annotated[
        bool,
        typer.Option("--no-train", help="Train nothing: report the complete runs in OUT."),
    ] = False,
    quiet: o.Quiet = False,
) -> None:
    """Train full FT, LoRA and MultiLoRA (and the ablation) per seed; write the claims table."""
    from spectra.study import StudyOptions, StudySize, run_study, with_seeds
    from spectra.study.markdown import claims_table

    size = StudySize.quick() if quick else StudySize.default()
    size = with_seeds(size, _seeds(seeds, "--seeds"), _seeds(ablation_seeds, "--ablation-seeds"))
    extra = {} if workers is None else {"workers": workers}
    options = StudyOptions(
        out=out, size=size, ablation=not no_ablation, train=not no_train, **extra
    )
    say = (lambda _msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    result = run_study(options, say=say)
    typer.echo(claims_table(result))
    typer.echo("")
    typer.echo(f"runs complete: {result['complete_runs']} of {result['planned_runs']}")
    typer.echo(f"result:  {out / 'study.json'}")
    typer.echo(f"tables:  {out / 'study.md'}")
    typer.echo(f"figures: {out / 'figures'}")
