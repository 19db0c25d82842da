"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spectra.analysis import AnalysisOptions
from spectra.engine.randomized import DEFAULT_OVERSAMPLE, DEFAULT_POWER_ITERS
from spectra.errors import OptionError
from spectra.parallel import ExecutionOptions

Label = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="Name of a CKPT (repeat: one per CKPT, in order)."),
]
Kind = Annotated[
    list[str] | None,
    typer.Option(
        "--kind",
        help="Force the kind of a CKPT instead of detecting it: full, lora, dora, multilora, "
        "kohya, loha, lokr (repeat: one per CKPT, in order; 'auto' detects).",
    ),
]
Modules = Annotated[
    str | None, typer.Option("--modules", "-m", help="Regex: analyse only module paths it matches.")
]
TopK = Annotated[int, typer.Option("--top-k", "-k", help="Subspace size for φ(i, j), i, j ≤ K.")]
DType = Annotated[str, typer.Option("--dtype", help="Compute dtype: float32 or float64.")]
Device = Annotated[str, typer.Option("--device", help="cpu, or cuda / cuda:N when present.")]
BaseMetrics = Annotated[
    bool,
    typer.Option(
        "--base-metrics/--no-base-metrics",
        help="Amplification factor and intruder dimensions against W0 (two SVDs of W0 per module).",
    ),
]
LoraAlpha = Annotated[
    float | None, typer.Option("--lora-alpha", help="α for LoRA files that do not store it.")
]
LoraScale = Annotated[
    float | None,
    typer.Option("--lora-scale", help="Full scaling s (instead of α/r) for LoRA files without α."),
]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Write the full result as JSON to this path.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
Similarity = Annotated[
    bool,
    typer.Option(
        "--similarity/--no-similarity",
        help="Subspace similarity φ of every pair of CKPTs (needs singular vectors; without it "
        "only singular values are computed: the fastest exact route).",
    ),
]
Svd = Annotated[
    str,
    typer.Option(
        "--svd",
        help="exact (every singular value) or randomized (top --top-k of dense updates, "
        "approximate: Halko et al.; factored updates stay exact).",
    ),
]
Oversample = Annotated[
    int, typer.Option("--oversample", help="Randomized SVD: extra random columns p.")
]
PowerIters = Annotated[
    int, typer.Option("--power-iters", help="Randomized SVD: power iterations q.")
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        help="Modules in parallel: N worker processes (threads = cores // N). Same JSON as a "
        "serial run with the same --threads; otherwise equal to the last float32 bit or so "
        "(LAPACK rounds differently per thread count).",
    ),
]
Executor = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="serial, process or dask (default: serial for 1 worker, process for more).",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786) for --executor dask; default: a local "
        "cluster of --workers processes.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", help="torch/BLAS threads per worker (default: cores // workers)."),
]


def analysis_options(
    *,
    modules: str | None,
    top_k: int,
    dtype: str,
    device: str,
    base_metrics: bool,
    similarity: bool = True,
    svd: str = "exact",
    oversample: int = DEFAULT_OVERSAMPLE,
    power_iters: int = DEFAULT_POWER_ITERS,
) -> AnalysisOptions:
    """Build AnalysisOptions from CLI values (validation happens in the dataclass)."""
    return AnalysisOptions(
        top_k=top_k,
        modules=modules,
        dtype=dtype,  # type: ignore[arg-type]  # validated by AnalysisOptions
        device=device,
        against_base=base_metrics,
        similarity=similarity,
        svd=svd,  # type: ignore[arg-type]
        oversample=oversample,
        power_iters=power_iters,
    )


def execution_options(
    *, workers: int, executor: str | None, scheduler: str | None, threads: int | None
) -> ExecutionOptions:
    """Build ExecutionOptions from CLI values (validation happens in the dataclass)."""
    return ExecutionOptions(
        executor=executor,  # type: ignore[arg-type]  # validated by ExecutionOptions
        workers=workers,
        scheduler=scheduler,
        threads=threads,
    )


def kinds_for(kind: list[str] | None, n: int) -> list[Any] | None:
    """Per-CKPT forced kinds: none given → detect all; else exactly one per CKPT."""
    if not kind:
        return None
    if len(kind) != n:
        raise OptionError(
            f"got {len(kind)} --kind for {n} checkpoints: give one per CKPT (or 'auto')"
        )
    allowed = {"auto", "full", "lora", "multilora", "dora", "loha", "lokr", "kohya"}
    bad = [k for k in kind if k not in allowed]
    if bad:
        raise OptionError(f"--kind {bad[0]!r} is not one of {', '.join(sorted(allowed))}")
    return [None if k == "auto" else k for k in kind]


class Progress:
    """A progress line on stderr for long work (module i of n); silent when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, done: int, total: int, module: str) -> None:
        if self.quiet:
            return
        end = "\n" if done == total else "\r"
        typer.echo(f"\r[{done}/{total}] {module[:70]:<70}", err=True, nl=False)
        if end == "\n":
            typer.echo("", err=True)
