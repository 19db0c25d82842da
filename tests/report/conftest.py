"""Fixtures: a synthetic analysis result (tests/plots/result_factory.py) and one full report
written from it (figures are the slow part, so the report is written once per module)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "plots"))  # the shared result factory
from result_factory import make_result  # noqa: E402

from spectra.report import write_report  # noqa: E402


@pytest.fixture
def result() -> dict[str, Any]:
    return make_result()


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """(result, report.html path) with every figure embedded."""
    result = make_result()
    out = tmp_path_factory.mktemp("report")
    return result, write_report(result, out)
