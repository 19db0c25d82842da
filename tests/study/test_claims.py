"""Claims and ablation rows from hand-built per-seed numbers with known answers."""

from __future__ import annotations

import pytest

from spectra.study.claims import ablation, arm_table, claims, compare
from spectra.study.extract import HIST_BINS


def _hist(linear_mode: int, log_mode: int) -> dict:
    linear = [1] * HIST_BINS
    linear[linear_mode] = 100
    log = [1] * HIST_BINS
    log[log_mode] = 100
    return {"linear": linear, "log": log, "log_below": 0}


def _arm(top1: float, phi: float, acc: float, hist: dict) -> dict:
    return {
        "top1_energy": top1,
        "effective_rank": 8 * (1 - top1),
        "k90": 8 * (1 - top1),
        "phi_left": phi,
        "phi_right": phi / 2,
        "histogram": hist,
        "accuracy": {"a": acc, "b": acc},
    }


def _seeds() -> list[dict]:
    out = []
    for seed, noise in enumerate((0.00, 0.03, -0.02)):
        zeros_and_top = [0] * HIST_BINS
        zeros_and_top[0], zeros_and_top[-1] = 97, 3  # LoRA: all at the two ends
        out.append(
            {
                "seed": seed,
                "arms": {
                    "full": _arm(0.2, 0.0, 0.9 + noise, _hist(0, 20)),  # falls from 0; bell on log
                    "lora": _arm(
                        0.55 + noise,
                        0.24 + noise,
                        0.8 + noise,
                        {"linear": zeros_and_top, "log": [0] * HIST_BINS, "log_below": 0},
                    ),  # fmt: skip
                    "multilora": _arm(
                        0.40 + noise, 0.11 + noise, 0.8 + noise + (seed - 1) / 50, _hist(0, 39)
                    ),  # fmt: skip
                },
            }
        )
    return out


def test_claims_verdicts_on_constructed_seeds() -> None:
    rows = {(c["id"], c["claim"]): c for c in claims(_seeds(), ["a", "b"])}
    by_id = {}
    for (cid, _), c in rows.items():
        by_id.setdefault(cid, []).append(c)
    top1 = by_id["1"][0]
    # the seed noise is shared by both methods: every paired difference is exactly -0.15
    assert top1["difference"]["values"] == pytest.approx([-0.15] * 3)
    assert top1["verdict"] == "holds"
    assert by_id["2a"][0]["verdict"] == "holds"  # effective rank 8·(1 − share)
    assert by_id["3a"][0]["verdict"] == "does not hold"  # φ 0.11 < 0.24 on every seed
    assert by_id["3a"][0]["difference"]["mean"] == pytest.approx(-0.13)
    assert by_id["4a"][0]["verdict"] == "does not hold" and by_id["4a"][0]["bell"] == [False] * 3
    assert by_id["4b"][0]["verdict"] == "holds"
    assert by_id["4b"][0]["mode"]["mean"] == pytest.approx(-4.0 + 20.5 * 4.0 / HIST_BINS)
    assert by_id["5"][0]["verdict"] == "holds"
    assert by_id["5"][0]["middle_share"]["mean"] == pytest.approx(0.0)
    # accuracy: MultiLoRA − LoRA = (seed − 1)/50 = −0.02, 0, 0.02: interval around 0
    acc = [c for c in by_id["6"] if c["claim"] == "accuracy (a): MultiLoRA > LoRA"][0]
    assert acc["difference"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert acc["verdict"] == "undecided"
    assert len(by_id["6"]) == 2 * 3  # tasks a, b and their mean, against LoRA and full


def test_compare_uses_only_seeds_both_arms_have() -> None:
    seeds = _seeds()
    del seeds[2]["arms"]["multilora"]
    row = compare(seeds, "multilora", "lora", lambda n: n["top1_energy"], "less")
    assert row["seeds"] == [0, 1]
    assert row["difference"]["n"] == 2


def test_arm_table_and_ablation_skip_missing_arms() -> None:
    seeds = _seeds()
    table = arm_table(seeds, ["full", "lora", "multilora", "multilora_n1"])
    assert set(table) == {"full", "lora", "multilora"}
    assert table["lora"]["top1_energy"]["mean"] == pytest.approx(0.55 + 0.01 / 3)
    assert ablation(seeds) == []  # no ablation arm trained: no comparison row
    for s in seeds:
        s["arms"]["multilora_n1"] = s["arms"]["lora"] | {"top1_energy": 0.1}
    rows = ablation(seeds)
    assert [(r["a"], r["b"]) for r in rows] == [("multilora_n1", "lora")]
    assert rows[0]["top1_energy"]["verdict"] == "holds"  # lower share: MultiLoRA's direction
