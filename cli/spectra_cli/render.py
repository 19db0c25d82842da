"""Plain-text rendering of results for the terminal (no computation here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spectra.layout import natural_key
from spectra.loaders.base import CheckpointReader, ModuleInfo
from spectra.summary import is_unchanged
from spectra.verdicts.base_notes import base_notes
from spectra.verdicts.lowrank import RankCheck, merged_adapter_lines
from spectra_cli.text import printable


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
    """Per method: modules, how many are in the means (finite, ΔW ≠ 0), mean top-1 energy
    share, mean effective rank, mean stable rank, and mean φ(k, k) (left / right singular
    subspaces) against every other method; then the unchanged and non-finite modules left out
    of the means are listed by :func:`problems`."""
    labels = [i["label"] for i in result["inputs"]]
    headers = ["method", "kind", "modules", "in means", "top1 energy", "eff. rank", "stable rank"]
    headers += ["k90", "util."]
    headers += [f"φ vs {o} (L/R)" for o in labels]
    relative = any("mean_relative_norm" in s for s in result["summary"])
    if relative:
        headers += ["‖ΔW‖/‖W0‖", "σ1 ratio"]
    rows = []
    for s in result["summary"]:
        row: list[Any] = [
            s["label"],
            s.get("kind"),
            s.get("modules"),
            s.get("changed_modules"),
            s["mean_top1_energy"],
            s["mean_effective_rank"],
            s["mean_stable_rank"],
            s.get("mean_k90"),
            s.get("mean_utilisation"),
        ]
        for o in labels:
            phi = s["mean_phi"].get(o)
            row.append("·" if phi is None else f"{_fmt(phi['left'])} / {_fmt(phi['right'])}")
        if relative:
            row += [s.get("mean_relative_norm"), s.get("mean_relative_spectral_norm")]
        rows.append(row)
    k = result["settings"]["top_k"]
    note = (
        "means over the modules with finite, non-zero ΔW (in means); φ over the modules where "
        "both have one. top1 energy = σ1²/Σσ²; eff. rank = exp(entropy of σ/Σσ); "
        "stable rank = Σσ²/σ1²; k90 = smallest k with top-k energy ≥ 0.9; util. = eff. rank / "
        f"R (adapters); φ = φ(k, k), k = min({k}, ranks of both)."
        + (" ‖ΔW‖/‖W0‖ = mean ‖ΔW‖_F/‖W0‖_F; σ1 ratio = mean σ1(ΔW)/σ1(W0)." if relative else "")
    )
    return table(headers, rows) + "\n" + note


def left_out(result: dict[str, Any]) -> list[str]:
    """One line per method with unchanged (ΔW = 0) or non-finite modules: how many, which."""
    lines = []
    for inp in result["inputs"]:
        rows = [m for m in result["modules"] if m["label"] == inp["label"]]
        groups = (
            ("unchanged (ΔW = 0)", [m["module"] for m in rows if is_unchanged(m)]),
            ("NaN/Inf", [m["module"] for m in rows if m.get("nonfinite")]),
        )
        for why, names in groups:
            if names:
                more = f" ... (+{len(names) - 4})" if len(names) > 4 else ""
                lines.append(
                    f"{inp['label']}: {len(names)} of {len(rows)} modules {why}, not in the "
                    f"means: {printable(', '.join(names[:4]))}{more}"
                )
    return lines


def problems(result: dict[str, Any]) -> list[str]:
    """Lines worth showing after the table: skipped tensors, unmatched keys, and the
    unchanged and NaN modules left out of the means."""
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
    return lines + left_out(result) + base_notes(result)


def inspect_text(reader: CheckpointReader, ranks: Sequence[RankCheck] | None = None) -> str:
    """What a checkpoint holds: kind, config, and one row per module (its structure: factored
    or dense, and why); with ``ranks`` (a full checkpoint read against its base) a numerical
    rank column and the merged-adapter verdict."""
    infos = sorted(reader.modules(), key=lambda i: natural_key(i.module))  # block.2 < block.10
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
