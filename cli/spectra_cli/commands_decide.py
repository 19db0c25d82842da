"""``spectra rank``, ``spectra extract``, ``spectra verify`` and ``spectra stack``: decisions
from spectra, written as files PEFT loads. Each command parses, calls one library function in
:mod:`spectra.decide`, prints a table and writes its outputs atomically."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from spectra.decide import extract as extract_mod
from spectra.decide import rank as rank_mod
from spectra.decide import stack as stack_mod
from spectra.decide import verify as verify_mod
from spectra.decide.peft_config import check_unique_targets, lora_config_dict
from spectra.errors import EXIT_VERDICT, OptionError
from spectra.io.atomic import check_not_an_input, write_text_atomic
from spectra_cli.options import JsonOut, OptionGroup, takes
from spectra_cli.text import printable

Base = Annotated[
    Path | None, typer.Option("--base", help="Base model checkpoint (needed for a full fine-tune).")
]
Modules = Annotated[
    str | None, typer.Option("--modules", help="Regex: only module paths it finds (re.search).")
]

Energy = Annotated[
    float | None,
    typer.Option("--energy", help="Keep this share τ of each module's Σσ² (0 < τ ≤ 1)."),
]
Budget = Annotated[
    int | None,
    typer.Option(
        "--budget", help="Total adapter parameters Σ r·(out + in), spread for most energy."
    ),
]
MaxRank = Annotated[int | None, typer.Option("--max-rank", help="Upper limit on every rank.")]

# How ranks are chosen, for rank and extract (``extract`` adds ``--rank``), received as a dict
# by name: the keywords of :func:`spectra.decide.rank.choose_ranks` and of ExtractOptions.
RANK_CHOICE = OptionGroup(
    "choice",
    (("energy", Energy, None), ("budget", Budget, None), ("max_rank", MaxRank, None)),
    dict,
)


@takes(RANK_CHOICE)
def rank(
    ckpt: Annotated[Path, typer.Argument(help="Full fine-tune (with --base) or an adapter.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The LoraConfig JSON to write.")],
    base: Base = None,
    alpha_ratio: Annotated[
        float, typer.Option("--alpha-ratio", help="α / r for every module (α rule: s constant).")
    ] = 1.0,
    modules: Modules = None,
    json_out: JsonOut = None,
    *,
    choice: dict[str, Any],
) -> None:
    """Per-module LoRA ranks from the spectrum of ΔW, as a PEFT LoraConfig JSON."""
    for path in (out, json_out):
        if path is not None:
            check_not_an_input(path, [ckpt, base])
    spectra, names = rank_mod.checkpoint_spectra(ckpt, base=base, modules=modules)
    ranks, gap = rank_mod.choose_ranks(spectra, **choice)
    plan = rank_mod.plan(spectra, ranks, gap)
    check_unique_targets(list(plan.ranks), names)
    config = lora_config_dict(plan.ranks, alpha_ratio=alpha_ratio)
    write_text_atomic(out, json.dumps(config, indent=2) + "\n")
    _write_json(json_out, _jsonable(plan))
    _table(
        ["module", "shape", "rank", "energy kept", "params"],
        [[m.module, _shape(m.shape), m.rank, _pct(m.energy_kept), m.params] for m in plan.modules],
    )
    total = f"total: {plan.params} parameters, {_pct(plan.energy_kept)} of Σσ² kept"
    if plan.gap_bound:
        total += f" (the optimum for this budget keeps at most {_pct(plan.gap_bound)} more)"
    typer.echo(total)
    typer.echo(f"wrote {out}")


@takes(RANK_CHOICE)
def extract(
    inputs: Annotated[list[Path], typer.Argument(help="BASE TUNED (full fine-tune), or ADAPTER.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter directory to write.")],
    rank: Annotated[int | None, typer.Option("--rank", help="One rank for every module.")] = None,
    base: Base = None,
    svd: Annotated[
        str, typer.Option("--svd", help="exact, or randomized (with --rank; error stated).")
    ] = "exact",
    assume_linear: Annotated[
        bool,
        typer.Option("--assume-linear", help="BASE has no config.json: every matrix is nn.Linear."),
    ] = False,
    modules: Modules = None,
    json_out: JsonOut = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-module progress.")] = False,
    *,
    choice: dict[str, Any],
) -> None:
    """A PEFT LoRA adapter whose merge gives W0 + the best rank-r approximation of each ΔW."""
    if len(inputs) == 2:
        if base is not None:
            raise OptionError("give BASE either as the first argument or as --base, not both")
        base, ckpt = inputs
    elif len(inputs) == 1:
        ckpt = inputs[0]
    else:
        raise OptionError("give BASE TUNED, or one ADAPTER to resize")
    check_not_an_input(out, [ckpt, base])
    options = extract_mod.ExtractOptions(
        rank=rank, **choice, svd=svd, assume_linear=assume_linear, modules=modules,  # type: ignore[arg-type]
    )  # fmt: skip
    say = None if quiet else (lambda line: typer.echo(line, err=True))
    result = extract_mod.extract(ckpt, out, base=base, options=options, progress=say)
    if json_out is not None:
        check_not_an_input(json_out, [ckpt, base])
    _write_json(json_out, result.as_dict())
    _table(
        ["module", "shape", "rank", "relative error"],
        [[m.module, _shape(m.shape), m.rank, f"{m.relative_error:.4g}"] for m in result.modules],
    )
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"total: {len(result.modules)} LoRA modules, {result.params} parameters, relative "
        f"error {result.relative_error:.4g} ({result.svd} SVD); modules_to_save: "
        f"{len(result.modules_to_save)}, lora_B.bias: {len(result.lora_bias)}, unchanged: "
        f"{len(result.unchanged)}"
    )
    typer.echo(f"wrote {out}")


def verify(
    base: Annotated[Path, typer.Argument(help="Base model checkpoint.")],
    adapter: Annotated[Path, typer.Argument(help="The adapter (any kind spectra reads).")],
    merged: Annotated[Path, typer.Argument(help="The merged checkpoint to check.")],
    fail_on: Annotated[
        str,
        typer.Option(
            "--fail-on",
            help="Comma list of verdicts that exit 3 (scale_mismatch, not_applied, "
            "other_change, changed), or none.",
        ),
    ] = "scale_mismatch,not_applied,other_change",
    json_out: JsonOut = None,
) -> None:
    """Does MERGED equal BASE + ADAPTER, module by module?"""
    failing = _fail_on(fail_on)
    if json_out is not None:
        check_not_an_input(json_out, [base, adapter, merged])
    result = verify_mod.verify(base, adapter, merged)
    payload = {
        "adapter": [dataclasses.asdict(c) for c in result.adapter],
        "outside": [dataclasses.asdict(c) for c in result.outside],
    }
    _write_json(json_out, payload)
    _table(
        ["module", "verdict", "scale c", "residual", "tolerance", "merged dtype"],
        [
            [
                c.module,
                c.verdict,
                _num(c.scale),
                _num(c.residual),
                _num(c.tolerance),
                c.merged_dtype,
            ]
            for c in result.adapter
        ],
    )
    changed = [c.module for c in result.outside if c.verdict == "changed"]
    typer.echo(
        f"outside the adapter: {len(changed)} changed, {len(result.outside) - len(changed)} unchanged"
    )
    for name in changed[:10]:
        typer.echo(f"  changed: {name}")
    typer.echo("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(result.counts().items())))
    hits = verify_mod.exit_verdicts(result, failing)
    if hits:
        typer.echo(
            f"--fail-on reached: {len(hits)} modules, e.g. {hits[0].module} ({hits[0].verdict})",
            err=True,
        )
        raise typer.Exit(EXIT_VERDICT)


def stack(
    adapters: Annotated[list[Path], typer.Argument(help="Two or more adapters.")],
    base: Base = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Scale per adapter, e.g. 1.0,0.7.")
    ] = None,
    json_out: JsonOut = None,
    fail_on_interfering: Annotated[
        bool, typer.Option("--fail-on-interfering", help="Exit 3 when a module interferes.")
    ] = False,
) -> None:
    """Stacking adapters: spectrum of the weighted sum, σ₁ spike and φ per module."""
    w = _weights(weights)
    if json_out is not None:
        check_not_an_input(json_out, [*adapters, base])
    checks, partial = stack_mod.stack(adapters, base=base, weights=w)
    _write_json(
        json_out, {"modules": [dataclasses.asdict(c) for c in checks], "not_shared": partial}
    )
    _table(
        ["module", "σ₁(sum)", "max σ₁", "spike", "φ₁ left", "φ₁ right", "verdict"],
        [
            [c.module, _num(c.sigma1_sum), _num(max(c.sigma1_parts)), _num(c.spike),
             _num(c.phi_top_left), _num(c.phi_top_right), c.verdict]
            for c in checks
        ],
    )  # fmt: skip
    n = sum(c.verdict == "interfering" for c in checks)
    typer.echo(f"{n} of {len(checks)} shared modules interfering; {len(partial)} not shared by all")
    if fail_on_interfering and n:
        raise typer.Exit(EXIT_VERDICT)


# Registered by app.py, in this order.
COMMANDS = (rank, extract, verify, stack)


def _fail_on(text: str) -> tuple[str, ...]:
    allowed = {"scale_mismatch", "not_applied", "other_change", "changed"}
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if items == ("none",):
        return ()
    bad = [t for t in items if t not in allowed]
    if bad:
        raise OptionError(
            f"--fail-on: unknown verdict {bad[0]!r}; use {', '.join(sorted(allowed))} or none"
        )
    return items


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",")]
    except ValueError as e:
        raise OptionError(f"--weights must be numbers separated by commas, got {text!r}") from e


def _write_json(path: Path | None, payload: Any) -> None:
    """``--json``: the payload as indented JSON, written atomically (nothing when not given)."""
    if path is not None:
        write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def _table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        typer.echo(printable(line))


def _shape(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"
