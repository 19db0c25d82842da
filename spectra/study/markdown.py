"""The study result as Markdown: the claims table and the ablation table (``study.md``)."""

from __future__ import annotations

from typing import Any

_NUMBER_NAMES = {
    "top1_energy": "top-1 share",
    "effective_rank": "eff. rank",
    "k90": "k90",
    "phi_left": "φ left",
    "phi_right": "φ right",
    "accuracy": "accuracy",
}


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _mean_sd(e: dict[str, Any] | None, digits: int = 3) -> str:
    if not e:
        return "—"
    sd = "" if e["sd"] is None else f" ± {_f(e['sd'], digits)}"
    return f"{_f(e['mean'], digits)}{sd}"


def _interval(e: dict[str, Any] | None, digits: int = 3) -> str:
    if not e or e["ci_low"] is None:
        return "—"
    return f"{_f(e['mean'], digits)} [{_f(e['ci_low'], digits)}, {_f(e['ci_high'], digits)}]"


def claims_table(result: dict[str, Any]) -> str:
    """One row per claim: the number(s), the 95 % interval of the paired difference, seeds and
    the verdict."""
    lines = [
        "| # | claim | MultiLoRA / measured | other | difference, 95 % CI | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["claims"]:
        n = len(c.get("seeds", []))
        if c["kind"] == "difference":
            cells = [_mean_sd(c.get("a")), _mean_sd(c.get("b")), _interval(c.get("difference"))]
        elif c["kind"] == "shape":
            unit = "σ/σ₁" if c["axis"] == "linear" else "log10 σ/σ₁"
            bell = sum(c["bell"])
            cells = [
                f"mode at {unit} = {_mean_sd(c['mode'], 2)}",
                f"bell-shaped in {bell} of {n} seeds",
                "—",
            ]
        else:
            cells = [
                f"middle share {_mean_sd(c['middle_share'], 4)}",
                f"low end {_mean_sd(c['low_share'], 3)}, σ/σ₁ ≥ 0.5: {_mean_sd(c['high_share'], 4)}",
                "—",
            ]
        lines.append(
            f"| {c['id']} | {c['claim']} | " + " | ".join(cells) + f" | {n} | **{c['verdict']}** |"
        )
    return "\n".join(lines)


def arm_table(result: dict[str, Any]) -> str:
    """Per arm: mean ± sd over seeds of every study number."""
    names = list(_NUMBER_NAMES)
    lines = [
        "| arm | rank | " + " | ".join(_NUMBER_NAMES[n] for n in names) + " | seeds |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for arm, row in result["table"].items():
        meta = result["arms"][arm]
        seeds = max((len(v["seeds"]) for v in row.values()), default=0)
        digits = {"effective_rank": 2, "k90": 1}
        cells = [_mean_sd(row.get(n), digits.get(n, 3)) for n in names]
        rank = meta["rank"] if meta["rank"] is not None else "dense"
        lines.append(f"| {meta['title']} | {rank} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def ablation_table(result: dict[str, Any]) -> str:
    """Per ablation comparison: the paired difference A − B of each number with its interval
    and verdict (toward MultiLoRA's claims: lower top-1 share, higher rank, k90, φ)."""
    names = ["top1_energy", "effective_rank", "phi_left", "phi_right", "accuracy"]
    lines = [
        "| comparison (A − B) | " + " | ".join(_NUMBER_NAMES[n] for n in names) + " | seeds |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for row in result["ablation"]:
        cells = []
        for n in names:
            c = row[n]
            cells.append(f"{_interval(c.get('difference'))} {_short(c['verdict'])}")
        seeds = len(row["top1_energy"].get("seeds", []))
        lines.append(f"| {row['what']} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def _short(verdict: str) -> str:
    return {"holds": "✔", "does not hold": "✘", "undecided": "?"}[verdict]


def study_markdown(result: dict[str, Any]) -> str:
    """The whole ``study.md``: settings line, claims, arms, ablation."""
    s = result["settings"]
    head = (
        f"Seeds {s['seeds']} (ablation {s['ablation_seeds']}), {s['recipe']['steps']} steps, "
        f"{result['complete_runs']} of {result['planned_runs']} runs complete; intervals: "
        f"{s['interval']}, {s['level']:.0%}."
    )
    parts = ["## Claims", head, claims_table(result), "## Every arm (mean ± sd over seeds)",
             arm_table(result)]  # fmt: skip
    if result["ablation"]:
        parts += [
            "## Ablation (paired differences; ✔ in MultiLoRA's direction, ✘ against, ? undecided)",
            ablation_table(result),
        ]
    return "\n\n".join(parts) + "\n"
