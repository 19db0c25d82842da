"""The report's rank advice: per checkpoint and τ, the ranks ``spectra rank --energy τ`` gives,
checked against energy shares worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plots"))

from result_factory import analyzed_adapters  # noqa: E402

from spectra.decide.rank import rank_advice  # noqa: E402
from spectra.report import write_report  # noqa: E402


def test_rank_advice_matches_hand_computed_energy_ranks(tmp_path: Path) -> None:
    # σ = (3, 2, 1): energies 9, 4, 1 of 14. k90 = 2 (13/14 = 0.929), k95 = k99 = 3.
    result = analyzed_adapters(tmp_path, {"a": [3.0, 2.0, 1.0], "b": [1.0, 1.0]})
    rows = {(r[0], r[1]): r for r in rank_advice(result).rows}
    cost = 32 + 24  # one module of 32 × 24
    label, tau, n, lo, med, hi, params, kept = rows[("a", 0.90)]
    assert (n, lo, med, hi, params) == (1, 2, 2.0, 2, 2 * cost)
    assert abs(kept - 13 / 14) < 1e-9
    assert rows[("a", 0.95)][3] == 3 and abs(rows[("a", 0.95)][7] - 1.0) < 1e-9
    assert rows[("a", 0.99)][6] == 3 * cost
    # a flat rank-2 spectrum needs both directions for any τ > 0.5
    assert all(rows[("b", t)][3] == 2 for t in (0.90, 0.95, 0.99))


def test_report_shows_rank_advice(tmp_path: Path) -> None:
    result = analyzed_adapters(tmp_path / "in", {"a": [3.0, 2.0, 1.0]})
    page = write_report(result, tmp_path / "report", figures={})
    html = page.read_text() if page.is_file() else (page / "report.html").read_text()
    assert "Rank advice" in html
    assert "min_rank" in html and "energy_kept" in html
