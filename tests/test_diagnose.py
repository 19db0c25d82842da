"""Verdicts follow from the thresholds: constructed spectra, and real adapters through
``spectra.analysis``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "plots"))  # the shared result factory
from result_factory import analyzed_adapters, base_block, make_result, module_row  # noqa: E402

from spectra.diagnose import (  # noqa: E402
    SEVERITY,
    Thresholds,
    diagnose,
    mean_off_diagonal,
    render_text,
)
from spectra.errors import OptionError  # noqa: E402

SHAPE = (32, 24)
DOMINATED = [10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # top-1 energy 100 / 107 ≈ 0.935
FLAT = [1.0] * 8  # top-1 energy 1/8, effective rank 8 = rank


def _result(rows: list[dict[str, Any]]) -> dict[str, Any]:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    return {
        "settings": {"intruder_k": 10, "intruder_eps": 0.5},
        "inputs": [{"label": lab, "kind": "lora", "path": lab, "config": {}} for lab in labels],
        "modules": rows,
    }


def _lora(values: list[float], label: str = "a", i: int = 0, **kw: Any) -> dict[str, Any]:
    return module_row(f"layers.{i}.q", label, "lora", values, SHAPE, rank=len(values), **kw)


def test_rank1_dominated_and_flat_adapters():
    d = diagnose(_result([_lora(DOMINATED, "dom"), _lora(FLAT, "flat")]))
    dom, flat = d.modules
    assert dom.verdict == "dominated" and dom.flags == ("dominated",)
    assert "top-1 energy share 0.935 >= 0.5" in dom.reasons[0]
    assert flat.verdict == "ok" and flat.flags == ()
    assert "0.125" in flat.reasons[0]
    assert [(m.label, m.verdict) for m in d.methods] == [("dom", "dominated"), ("flat", "ok")]
    assert d.overall == "dominated"
    assert d.reached("dominated") and not d.reached("intruders")


def test_threshold_override_flips_the_verdict():
    assert (
        diagnose(_result([_lora(DOMINATED)]), Thresholds(dominated_top1_energy=0.94)).overall
        == "ok"
    )
    # 1/8 < 0.2 is not met by a flat spectrum, but a lower top-1 threshold catches it
    assert (
        diagnose(_result([_lora(FLAT)]), Thresholds(dominated_top1_energy=0.125)).overall
        == "dominated"
    )


def test_effective_rank_ratio_rule_on_a_dense_update():
    # dense, rank 24: four equal directions and 20 tiny ones: top-1 energy 0.25 < 0.5, but
    # effective rank ≈ 4 and 4 / 24 ≈ 0.17 <= 0.2
    row = module_row("layers.0.q", "full", "full", [1.0] * 4 + [1e-9] * 20, SHAPE)
    m = diagnose(_result([row])).modules[0]
    assert m.verdict == "dominated"
    assert "effective rank 4.00 / rank 24 = 0.167 <= 0.2" in m.reasons[0]
    assert diagnose(_result([row]), Thresholds(dominated_erank_ratio=0.1)).overall == "ok"


def test_rank1_updates_are_not_judged_for_dominance():
    m = diagnose(_result([_lora([3.0])])).modules[0]
    assert m.verdict == "ok" and "dominated" not in m.judged
    assert (
        diagnose(_result([_lora([3.0])]), Thresholds(dominated_min_rank=1)).overall == "dominated"
    )


def test_rank_is_capped_by_the_matrix_shape():
    # inner rank R = 48 on a 32 × 24 matrix: at most 24 nonzero σ, so a flat spectrum of 24
    # values has effective rank / rank = 24 / 24 = 1, not 24 / 48
    row = module_row("layers.0.q", "ml", "multilora", [1.0] * 24, SHAPE, rank=48)
    assert diagnose(_result([row]), Thresholds(dominated_erank_ratio=0.6)).overall == "ok"


def test_collapsed_multilora_either_side():
    def ml(off_left: float, off_right: float) -> dict[str, Any]:
        block = {
            "n": 2,
            "r": 4,
            "phi_left": [[1, off_left], [off_left, 1]],
            "phi_right": [[1, off_right], [off_right, 1]],
            "scaling_norms": [],
            "scaling": [],
        }
        return _lora(FLAT, multilora=block)

    assert diagnose(_result([ml(0.95, 0.1)])).overall == "collapsed"
    assert diagnose(_result([ml(0.1, 0.9)])).overall == "collapsed"  # >= is inclusive
    assert diagnose(_result([ml(0.89, 0.1)])).overall == "ok"
    assert diagnose(_result([ml(0.95, 0.1)]), Thresholds(collapsed_phi=0.96)).overall == "ok"


def test_intruders_and_amplification_from_base_metrics():
    row = _lora(FLAT, base_metrics=base_block(amplification=12.0, intruders=1, energy=0.2))
    m = diagnose(_result([row])).modules[0]
    assert m.flags == ("intruders", "amplified")
    assert "top-10" in m.reasons[0] and "eps = 0.5" in m.reasons[0]
    assert "12" in m.reasons[1]
    t = Thresholds(amplification=12.5, intruder_count=2)
    assert diagnose(_result([row]), t).overall == "ok"
    no_base = diagnose(_result([_lora(FLAT)])).modules[0]
    assert "intruders" not in no_base.judged and "amplified" not in no_base.judged


def test_share_rule_for_methods():
    rows = [_lora(DOMINATED, i=0), _lora(DOMINATED, i=1), _lora(FLAT, i=2), _lora(FLAT, i=3)]
    method = diagnose(_result(rows)).methods[0]
    assert method.verdict == "dominated"  # 2 of 4 = 50% >= 50%
    assert method.counts["dominated"] == 2 and method.judged["dominated"] == 4
    assert "2 of 4 modules (50%) -> reached" in method.reasons[0]
    assert diagnose(_result(rows[1:])).overall == "ok"  # 1 of 3
    assert diagnose(_result(rows[1:]), Thresholds(overall_share=0.3)).overall == "dominated"


def test_nonfinite_is_reached_by_one_module_and_unchanged_by_share():
    bad = _lora(FLAT, i=9)
    bad.update(nonfinite=True, singular_values=[], metrics=None)
    rows = [_lora(FLAT, i=i) for i in range(5)] + [bad]
    d = diagnose(_result(rows))
    assert d.overall == "nonfinite" and d.modules[-1].verdict == "nonfinite"
    zero = [_lora([0.0] * 4, i=i) for i in range(2)] + [_lora(FLAT, i=3)]
    d = diagnose(_result(zero))
    assert d.modules[0].verdict == "unchanged" and d.overall == "unchanged"


def test_overall_is_the_most_severe_method_verdict():
    rows = [_lora(DOMINATED, "x"), _lora(FLAT, "y", base_metrics=base_block(1.0, 3, 0.5))]
    d = diagnose(_result(rows))
    assert [m.verdict for m in d.methods] == ["dominated", "intruders"]
    assert d.overall == "dominated"
    assert SEVERITY.index("dominated") < SEVERITY.index("intruders")
    with pytest.raises(OptionError, match="unknown verdict"):
        d.reached("broken")


def test_render_text_and_json():
    d = diagnose(make_result())
    text = render_text(d)
    assert text.startswith("overall verdict: dominated\n")
    assert "lora (lora): dominated" in text and "full (full): ok" in text
    assert "flagged modules:" in text and "encoder.layer.0.attention.query: dominated" in text
    assert "multilora  encoder" not in text  # nothing flagged there
    # several methods: one table, one row each, before the rules
    table = text.split("rules:")[0].splitlines()
    assert table[2].split()[:4] == ["method", "kind", "modules", "verdict"]
    assert [row.split()[0] for row in table[4:7]] == ["full", "lora", "multilora"]
    assert render_text(d, all_modules=True).count("multilora  encoder") == 6
    assert json.loads(json.dumps(d.to_dict()))["overall"] == "dominated"


def test_mean_off_diagonal():
    assert mean_off_diagonal([[1, 0.2, 0.4], [0.2, 1, None], [0.4, None, 1]]) == pytest.approx(0.3)
    assert mean_off_diagonal([[1.0]]) is None
    assert mean_off_diagonal([[None, None], [None, None]]) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dominated_top1_energy": 1.5},
        {"collapsed_phi": -0.1},
        {"overall_share": 0.0},
        {"amplification": 0.0},
        {"intruder_count": 0},
        {"dominated_min_rank": 0},
    ],
)
def test_thresholds_are_validated(kwargs):
    with pytest.raises(OptionError):
        Thresholds(**kwargs)


def test_verdicts_through_the_real_analysis(tmp_path):
    result = analyzed_adapters(tmp_path, {"dom": DOMINATED, "flat": FLAT})
    top1 = [m["metrics"]["top1_energy"] for m in result["modules"]]
    assert top1 == pytest.approx([100 / 107, 1 / 8], rel=1e-12)
    assert [m["rank"] for m in result["modules"]] == [8, 8]
    d = diagnose(result, Thresholds(amplification=1e6, intruder_count=10))
    assert [(m.label, m.verdict) for m in d.methods] == [("dom", "dominated"), ("flat", "ok")]
