"""Fixtures: analysis results built from chosen spectra (tests/plots/result_factory.py)."""

from __future__ import annotations

from typing import Any

import pytest
from result_factory import make_result


@pytest.fixture
def result() -> dict[str, Any]:
    """full (dense, 6 modules), lora (rank 4), multilora (n = 2, r = 2), with base metrics."""
    return make_result()


@pytest.fixture
def plain_result() -> dict[str, Any]:
    """full and lora only, no base metrics."""
    return make_result(with_base=False, with_multilora=False)
