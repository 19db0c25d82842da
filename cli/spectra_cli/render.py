"""Plain-text rendering of results for the terminal (no computation here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spectra.loaders.base import CheckpointReader, ModuleInfo
from spectra.loaders.lowrank import RankCheck, merged_adapter_lines
from spectra_cli.app import printable


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left/right-aligned fixed-width table: text columns left, numbers right."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [all(_is_num(row[i]) for row in rows) and rows for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) or v is None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
    return printable(str(v))  # names come from files: no terminal control sequences


def summary_table(result: dict[str, Any]) -> str:
    """Per method: modules, mean top-1 energy share, mean effective rank, mean stable rank, and
    mean φ(k, k) (left / right singular subspaces) against every other method."""
    labels = [i["label"] for i in result["inputs"]]
    headers = ["method", "kind", "modules", "top1 energy", "eff. rank", "stable rank"]
    headers += [f"φ vs {o} (L/R)" for o in labels]
    rows = []
    for s in result["summary"]:
        row: list[Any] = [
            s["label"],
            s["kind"],
            s["modules"],
            s["mean_top1_energy"],
            s["mean_effective_rank"],
            s["mean_stable_rank"],
        ]
        for o in labels:
            phi = s["mean_phi"].get(o)
            row.append("·" if phi is None else f"{_fmt(phi['left'])} / {_fmt(phi['right'])}")
        rows.append(row)
    k = result["settings"]["top_k"]
    note = (
        f"means over modules. top1 energy = σ1²/Σσ²; eff. rank = exp(entropy of σ/Σσ); "
        f"stable rank = Σσ²/σ1²; φ = φ(k, k), k = min({k}, ranks of both)."
    )
    return table(headers, rows) + "\n" + note


def problems(result: dict[str, Any]) -> list[str]:
    """Lines worth showing after the table: skipped tensors, unmatched keys, NaN modules."""
    lines = []
    for label, rep in result.get("skipped", {}).items():
        if rep["skipped_1d"]:
            lines.append(f"{label}: skipped {rep['skipped_1d']} 1-D tensors (biases, norms)")
        for side in ("only_in_base", "only_in_tuned"):
            keys = rep[side]
            if keys:
                where = side.replace("_", " ")
                shown = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
                lines.append(f"{label}: {len(keys)} keys {where} (not compared): {shown}")
        lines += [f"{label}: {n}" for n in rep["notes"]]
    for m in result["modules"]:
        if m["nonfinite"]:
            lines.append(f"{m['label']}: {m['module']}: ΔW has NaN/Inf (left out of the means)")
    return lines


def inspect_text(reader: CheckpointReader, ranks: Sequence[RankCheck] | None = None) -> str:
    """What a checkpoint holds: kind, config, and one row per module (its structure: factored
    or dense, and why); with ``ranks`` (a full checkpoint read against its base) a numerical
    rank column and the merged-adapter verdict."""
    infos = reader.modules()
    head = [f"path:    {reader.path}", f"kind:    {reader.kind}", f"modules: {len(infos)}"]
    for key, value in sorted(reader.config.items()):
        if value not in (None, {}, [], ()):
            head.append(f"{key}: {value}")
    by_module = {c.module: c.numerical_rank for c in ranks or ()}
    rows = [
        [i.module, "×".join(map(str, i.shape)), i.rank, i.scaling, _structure(i)]
        + ([by_module.get(i.module)] if ranks is not None else [])
        for i in infos
    ]
    headers = ["module", "ΔW shape (out×in)", "rank R", "scaling", "structure"]
    body = table(headers + (["num. rank"] if ranks is not None else []), rows)
    rep = reader.report
    tail = merged_adapter_lines(ranks) if ranks is not None else []
    if rep.skipped_1d:
        tail.append(f"skipped {len(rep.skipped_1d)} 1-D tensors")
    for where, keys in (("base", rep.only_in_base), ("tuned", rep.only_in_tuned)):
        if keys:
            shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
            tail.append(f"{len(keys)} keys only in {where} (not compared): {shown}")
    tail += rep.notes
    return "\n".join(head) + "\n\n" + body + ("\n" + "\n".join(tail) if tail else "")


def _structure(info: ModuleInfo) -> str:
    """The reader's own words (``detail["structure"]``), else dense / factored from the rank."""
    given = info.detail.get("structure")
    if given:
        return str(given)
    return "dense" if info.rank is None else f"factored, rank ≤ {info.rank}"
