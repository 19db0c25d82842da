"""The result as tables, built once: the report's CSV files, its HTML tables, the DataFrames
of :func:`spectra.frames.frames` and a result's notebook display all come from here.

Three tables:

* ``summary.csv`` — one row per method: module counts (all, changed = in the means,
  unchanged, non-finite), mean top-1 energy share, mean effective and stable rank over the
  changed modules, mean φ(k, k) against every other method (left and right);
* ``modules.csv`` — one row per (module, method): stack, layer, module type, shape, rank,
  every dominance metric and the base-relative metrics;
* ``similarity.csv`` — one row per (module, method pair, side): k, φ(1, 1), φ(k, k), the
  Grassmann distance and the principal angles (radians, ``;``-separated).

CSV cells hold full-precision floats (``repr``), empty for a missing value; the HTML report
rounds to four significant digits. Output is byte-deterministic.
"""

from __future__ import annotations

import csv
import io
import math
import typing
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Annotated, Any, NotRequired

from spectra.io.atomic import write_text_atomic
from spectra.result_types import BaseMetrics, Metrics


def _scalar_fields(tp: Any, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fields of a result TypedDict that hold one value (lists and objects left out), in
    declaration order: the table columns follow the result's one definition."""
    out = []
    for name, hint in typing.get_type_hints(tp, include_extras=True).items():
        while typing.get_origin(hint) in (NotRequired, Annotated):
            hint = typing.get_args(hint)[0]
        if typing.get_origin(hint) not in (list, dict) and name not in skip:
            out.append(name)
    return tuple(out)


# every scalar of modules[].metrics and modules[].base_metrics, as declared
METRIC_COLUMNS = _scalar_fields(Metrics, skip=("nonfinite",))
BASE_COLUMNS = _scalar_fields(BaseMetrics)
SUMMARY_EXTRA = ("mean_k90", "mean_k95", "mean_k99", "mean_utilisation")


@dataclass(frozen=True)
class Table:
    """A header and rows of plain values (str, int, float, bool or None)."""

    name: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def summary_table(result: dict[str, Any]) -> Table:
    """Per-method means (``result["summary"]``) with one φ column per other method and side."""
    labels = [inp["label"] for inp in result.get("inputs", [])]
    phi_cols = [(other, side) for other in labels for side in ("left", "right")]
    header = (
        "label",
        "kind",
        "modules",
        "changed_modules",
        "unchanged_modules",
        "nonfinite_modules",
        "mean_top1_energy",
        "mean_effective_rank",
        "mean_stable_rank",
        *SUMMARY_EXTRA,
        *(f"mean_phi_{side}_vs_{other}" for other, side in phi_cols),
    )
    rows = []
    for s in result.get("summary", []):
        phis = s.get("mean_phi", {})
        rows.append(
            (
                s["label"],
                s.get("kind"),
                s.get("modules"),
                s.get("changed_modules"),
                s.get("unchanged_modules"),
                s.get("nonfinite_modules"),
                s.get("mean_top1_energy"),
                s.get("mean_effective_rank"),
                s.get("mean_stable_rank"),
                *(s.get(c) for c in SUMMARY_EXTRA),
                *(phis.get(other, {}).get(side) for other, side in phi_cols),
            )
        )
    return Table("summary", header, tuple(rows))


def modules_table(result: dict[str, Any]) -> Table:
    """One row per (module, method): identity, shape, metrics, base metrics, notes."""
    header = (
        "module",
        "label",
        "kind",
        "stack",
        "layer",
        "module_type",
        "out",
        "in",
        "rank",
        "structural_zeros",
        "nonfinite",
        *METRIC_COLUMNS,
        *BASE_COLUMNS,
        "notes",
    )
    rows = []
    for m in result.get("modules", []):
        metrics, base = m.get("metrics") or {}, m.get("base_metrics") or {}
        rows.append(
            (
                m["module"],
                m["label"],
                m.get("kind"),
                m.get("stack", ""),
                m.get("layer"),
                m.get("module_type"),
                m["shape"][0],
                m["shape"][1],
                m.get("rank"),
                m.get("structural_zeros"),
                bool(m.get("nonfinite")),
                *(metrics.get(c) for c in METRIC_COLUMNS),
                *(base.get(c) for c in BASE_COLUMNS),
                "; ".join(m.get("notes", [])),
            )
        )
    return Table("modules", header, tuple(rows))


def similarity_table(result: dict[str, Any]) -> Table:
    """One row per (module, pair, side): φ(1, 1), φ(k, k), Grassmann distance, angles."""
    header = (
        "module",
        "a",
        "b",
        "side",
        "k",
        "phi_1_1",
        "phi_k_k",
        "grassmann_distance",
        "principal_angles",
    )
    rows = []
    for s in result.get("similarity", []):
        phi = s.get("phi") or [[None]]
        rows.append(
            (
                s["module"],
                s["a"],
                s["b"],
                s["side"],
                s.get("k"),
                phi[0][0],
                phi[-1][-1],
                s.get("grassmann_distance"),
                ";".join(csv_cell(a) for a in s.get("principal_angles", [])),
            )
        )
    return Table("similarity", header, tuple(rows))


def all_tables(result: dict[str, Any]) -> list[Table]:
    """Summary, modules and similarity tables, in that order."""
    return [summary_table(result), modules_table(result), similarity_table(result)]


def csv_cell(value: Any) -> str:
    """Full precision for floats (``repr``), empty for None/NaN, ``true``/``false`` for bools."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def display_cell(value: Any) -> str:
    """Four significant digits for floats, ``–`` for a missing value (HTML report)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_csv(table: Table) -> str:
    """The table as CSV text (``\\n`` line ends, minimal quoting)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows([csv_cell(v) for v in row] for row in table.rows)
    return buf.getvalue()


def write_tables(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``summary.csv``, ``modules.csv`` and ``similarity.csv`` into ``out_dir`` atomically.

    Returns:
        The three paths, in that order.
    """
    return [
        write_text_atomic(Path(out_dir) / f"{table.name}.csv", to_csv(table))
        for table in all_tables(result)
    ]


def to_markdown(table: Table) -> str:
    """The table as a Markdown (GitHub) table, cells as :func:`display_cell`."""
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += [
        "| " + " | ".join(display_cell(v).replace("|", "\\|") for v in row) + " |"
        for row in table.rows
    ]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    """The table as one HTML ``<table>`` (escaped), cells as :func:`display_cell`."""
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(display_cell(v))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
