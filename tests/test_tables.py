"""CSV/HTML cell formatting and the shape of the three tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "plots"))  # the shared result factory
from result_factory import make_result  # noqa: E402

from spectra.tables import (  # noqa: E402
    BASE_COLUMNS,
    METRIC_COLUMNS,
    all_tables,
    csv_cell,
    display_cell,
    modules_table,
    summary_table,
    to_csv,
)


@pytest.fixture
def result():
    return make_result()


@pytest.mark.parametrize(
    ("value", "csv_text", "shown"),
    [
        (None, "", "–"),
        (math.nan, "", "–"),
        (True, "true", "yes"),
        (3, "3", "3"),
        (0.1 + 0.2, "0.30000000000000004", "0.3"),
        (123456.789, "123456.789", "1.235e+05"),
        ("a,b", "a,b", "a,b"),
    ],
)
def test_cells(value, csv_text, shown):
    assert csv_cell(value) == csv_text
    assert display_cell(value) == shown


def test_every_row_matches_its_header(result):
    for table in all_tables(result):
        assert table.rows, table.name
        assert all(len(row) == len(table.header) for row in table.rows), table.name
    assert [t.name for t in all_tables(result)] == ["summary", "modules", "similarity"]


def test_modules_table_carries_metrics_and_base_metrics(result):
    table = modules_table(result)
    header = list(table.header)
    row = dict(zip(header, table.rows[1], strict=True))  # lora, layer 0, attention.query
    source = result["modules"][1]
    assert (row["label"], row["out"], row["in"], row["rank"], row["structural_zeros"]) == (
        "lora",
        48,
        48,
        4,
        44,
    )
    for col in METRIC_COLUMNS:
        assert row[col] == source["metrics"].get(col)
    for col in BASE_COLUMNS:
        assert row[col] == source["base_metrics"][col]
    multilora = dict(zip(header, table.rows[2], strict=True))
    assert all(multilora[col] is None for col in BASE_COLUMNS)  # no base metrics: empty cells


def test_summary_has_one_phi_column_per_method_and_side(result):
    table = summary_table(result)
    phi_cols = [h for h in table.header if h.startswith("mean_phi_")]
    assert len(phi_cols) == 3 * 2
    text = to_csv(table)
    assert text.endswith("\n") and "\r" not in text
    assert text.count("\n") == 1 + len(result["summary"])
