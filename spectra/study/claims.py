"""The paper's claims as rows with a number, an interval and a verdict; the ablation table.

Comparisons are paired by seed (:func:`spectra.study.stats.paired_difference`) over the seeds
where both arms were trained. A claim "A > B" **holds** when the 95 % t interval of the mean
per-seed difference A − B lies above 0, **does not hold** when it lies below 0, and is
**undecided** at this many seeds otherwise. Shape claims (bell-shaped, both ends) are yes/no per
seed: they hold when every seed says yes, do not hold when every seed says no.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from spectra.study.arms import ABLATION_PAIRS
from spectra.study.extract import bin_centers_linear, bin_centers_log, ends, shape
from spectra.study.stats import (
    estimate,
    paired_difference,
    verdict,
    verdict_of_flags,
)

Seeds = Sequence[dict[str, Any]]  # per seed: analyse_seed's output
NUMBERS = ("top1_energy", "effective_rank", "k90", "phi_left", "phi_right")


def _values(seeds: Seeds, arm: str, get: Any) -> dict[int, float]:
    """Seed → value for the seeds that have ``arm`` and a finite value."""
    out = {}
    for s in seeds:
        numbers = s["arms"].get(arm)
        value = None if numbers is None else get(numbers)
        if value is not None:
            out[s["seed"]] = float(value)
    return out


def _metric(name: str) -> Any:
    return lambda numbers: numbers.get(name)


def _accuracy(task: str | None) -> Any:
    def get(numbers: dict[str, Any]) -> float:
        acc = numbers["accuracy"]
        return acc[task] if task is not None else sum(acc.values()) / len(acc)

    return get


def compare(
    seeds: Seeds, a: str, b: str, get: Any, claim: Literal["greater", "less"]
) -> dict[str, Any]:
    """Paired comparison of arm ``a`` with arm ``b`` on one number (``get(numbers)``)."""
    va, vb = _values(seeds, a, get), _values(seeds, b, get)
    common = sorted(set(va) & set(vb))
    row: dict[str, Any] = {"seeds": common}
    if not common:
        return row | {"verdict": "undecided"}
    diff = paired_difference([va[s] for s in common], [vb[s] for s in common])
    row |= {
        "a": estimate([va[s] for s in common]).to_json(),
        "b": estimate([vb[s] for s in common]).to_json(),
        "difference": diff.to_json(),
        "verdict": verdict(diff, claim),
    }
    return row


def _comparison_claim(
    cid: str, text: str, seeds: Seeds, a: str, b: str, get: Any, claim: Literal["greater", "less"]
) -> dict[str, Any]:
    return {"id": cid, "claim": text, "kind": "difference", **compare(seeds, a, b, get, claim)}


def _shape_claim(cid: str, text: str, seeds: Seeds, arm: str, axis: str) -> dict[str, Any]:
    centers = bin_centers_linear() if axis == "linear" else bin_centers_log()
    per_seed = {
        s["seed"]: shape(s["arms"][arm]["histogram"][axis], centers)
        for s in seeds
        if arm in s["arms"]
    }
    flags = [v["bell"] for v in per_seed.values()]
    modes = [v["mode"] for v in per_seed.values()]
    return {
        "id": cid,
        "claim": text,
        "kind": "shape",
        "axis": axis,
        "seeds": sorted(per_seed),
        "mode": estimate(modes).to_json() if modes else None,
        "bell": flags,
        "verdict": verdict_of_flags(flags),
    }


def _ends_claim(seeds: Seeds, arm: str, max_middle: float = 0.05) -> dict[str, Any]:
    per_seed = {
        s["seed"]: ends(s["arms"][arm]["histogram"]["linear"]) for s in seeds if arm in s["arms"]
    }
    flags = [v["middle"] < max_middle for v in per_seed.values()]
    middles = [v["middle"] for v in per_seed.values()]
    return {
        "id": "5",
        "claim": f"LoRA's spectrum lies at both ends (σ/σ₁ in [0.025, 0.5) < {max_middle:.0%})",
        "kind": "ends",
        "seeds": sorted(per_seed),
        "middle_share": estimate(middles).to_json() if middles else None,
        "low_share": estimate([v["low"] for v in per_seed.values()]).to_json() if middles else None,
        "high_share": (
            estimate([v["high"] for v in per_seed.values()]).to_json() if middles else None
        ),
        "flags": flags,
        "verdict": verdict_of_flags(flags),
    }


def claims(seeds: Seeds, tasks: Sequence[str]) -> list[dict[str, Any]]:
    """The claims table (see the module docstring), in the issue's order."""
    ml, lo, ft = "multilora", "lora", "full"
    rows = [
        _comparison_claim(
            "1", "MultiLoRA top-1 energy share < LoRA's", seeds, ml, lo, _metric("top1_energy"),
            "less",
        ),
        _comparison_claim(
            "2a", "MultiLoRA effective rank > LoRA's", seeds, ml, lo, _metric("effective_rank"),
            "greater",
        ),
        _comparison_claim("2b", "MultiLoRA k90 > LoRA's", seeds, ml, lo, _metric("k90"), "greater"),
        _comparison_claim(
            "3a", "φ(MultiLoRA, full) > φ(LoRA, full), left, k = 8", seeds, ml, lo,
            _metric("phi_left"), "greater",
        ),
        _comparison_claim(
            "3b", "φ(MultiLoRA, full) > φ(LoRA, full), right, k = 8", seeds, ml, lo,
            _metric("phi_right"), "greater",
        ),
        _shape_claim("4a", "full FT spectrum bell-shaped, linear σ/σ₁ axis", seeds, ft, "linear"),
        _shape_claim("4b", "full FT spectrum bell-shaped, log σ axis", seeds, ft, "log"),
        _ends_claim(seeds, lo),
    ]  # fmt: skip
    for task in [*tasks, None]:
        name = task or "mean of tasks"
        for other, title in ((lo, "LoRA"), (ft, "full FT")):
            rows.append(
                _comparison_claim(
                    "6", f"accuracy ({name}): MultiLoRA > {title}", seeds, ml, other,
                    _accuracy(task), "greater",
                )
            )  # fmt: skip
    return rows


def arm_table(seeds: Seeds, arms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per arm: every study number (and the mean accuracy) over the seeds that have it."""
    table: dict[str, dict[str, Any]] = {}
    for arm in arms:
        row: dict[str, Any] = {}
        for name in (*NUMBERS, "accuracy"):
            get = _accuracy(None) if name == "accuracy" else _metric(name)
            values = _values(seeds, arm, get)
            if values:
                row[name] = estimate([values[s] for s in sorted(values)]).to_json() | {
                    "seeds": sorted(values)
                }
        if row:
            table[arm] = row
    return table


def ablation(seeds: Seeds) -> list[dict[str, Any]]:
    """The ablation's paired comparisons (``ABLATION_PAIRS``) on every study number; the
    verdict column asks whether A differs from B in the direction of MultiLoRA's claims
    (lower top-1 share, higher effective rank, k90 and φ)."""
    out = []
    present = {name for s in seeds for name in s["arms"]}
    for a, b, what in ABLATION_PAIRS:
        if not {a, b} <= present:
            continue
        row: dict[str, Any] = {"a": a, "b": b, "what": what}
        for name in (*NUMBERS, "accuracy"):
            get = _accuracy(None) if name == "accuracy" else _metric(name)
            claim: Literal["greater", "less"] = "less" if name == "top1_energy" else "greater"
            row[name] = compare(seeds, a, b, get, claim)
        out.append(row)
    return out
