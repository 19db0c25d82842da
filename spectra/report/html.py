"""The shareable report: one self-contained HTML file, plus the result JSON and CSV tables.

``report.html`` references nothing outside itself — figures are embedded as base64 PNG
(``data:`` URIs), styles are inline, there are no scripts, fonts or links to fetch — so it can
be mailed or attached to an issue as is. Same result → same bytes: no timestamp unless one is
passed, figures rendered deterministically (:mod:`spectra.plots.output`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from spectra.decide.rank import rank_advice
from spectra.diagnose import Diagnosis, Thresholds, diagnose
from spectra.io.atomic import write_text_atomic
from spectra.plots import FIGURES, all_figures, method_colors, render_figure
from spectra.results import save_result
from spectra.tables import Table, all_tables, display_cell, write_tables

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: .9em; color: #444; }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .3em;
          vertical-align: -.1em; border: 1px solid #0003; }
.verdict { font-weight: bold; } .muted { color: #666; font-size: .9em; }
details { margin-bottom: 1.5em; } summary { cursor: pointer; font-weight: bold; }
"""
_NORMALIZATION_NOTE = (
    "Normalizations: top-k energy share = Σ_{i≤k} σ_i² / Σ σ_i²; effective rank = exp(−Σ p log p),"
    " p = σ/Σσ; stable rank = Σσ² / σ_1²; spectral entropy = −Σ q log q / log m, q = σ²/Σσ²;"
    " φ(i, j) = ‖U_iᵀ U_j‖_F² / min(i, j); φ(k, k) in the summary is the last cell of each grid;"
    " k90/k95/k99 = smallest k with top-k energy share ≥ 0.90/0.95/0.99 (full spectrum);"
    " utilisation = effective rank / R (adapters). Summary means are over the changed modules"
    " (finite, ΔW ≠ 0: changed_modules); unchanged and non-finite modules are counted beside."
)


def write_report(
    result: dict[str, Any],
    out_dir: str | Path,
    *,
    figures: Mapping[str, Figure] | None = None,
    thresholds: Thresholds | None = None,
    title: str = "spectra report",
    timestamp: str | None = None,
) -> Path:
    """Write ``report.html``, ``results.json``, ``summary.csv``, ``modules.csv`` and
    ``similarity.csv`` into ``out_dir`` (each atomically).

    Args:
        result: Analysis result (``spectra.analysis.analyze`` / ``compare --json``).
        out_dir: Directory, created if missing.
        figures: Name → figure to embed; default :func:`spectra.plots.all_figures`.
        thresholds: Rules for the verdicts section (default :class:`Thresholds`).
        title: Page title.
        timestamp: Shown in the header when given (kept out by default so identical input
            gives identical bytes).

    Returns:
        The path of ``report.html``.
    """
    out_dir = Path(out_dir)
    figures = all_figures(result) if figures is None else figures
    diagnosis = diagnose(result, thresholds or Thresholds())
    save_result(result, out_dir / "results.json")
    write_tables(result, out_dir)
    page = render_html(
        result, figures=figures, diagnosis=diagnosis, title=title, timestamp=timestamp
    )
    return write_text_atomic(out_dir / "report.html", page)


def render_html(
    result: dict[str, Any],
    *,
    figures: Mapping[str, Figure],
    diagnosis: Diagnosis,
    title: str = "spectra report",
    timestamp: str | None = None,
) -> str:
    """The report page as one HTML string (see :func:`write_report`)."""
    tables = {t.name: t for t in all_tables(result)}
    body = [
        f"<h1>{escape(title)}</h1>",
        _header(result, timestamp),
        "<h2>Inputs</h2>",
        _inputs(result),
        "<h2>Settings</h2>",
        _settings(result),
        "<h2>Verdicts</h2>",
        _verdicts(diagnosis),
        "<h2>Summary</h2>",
        _table_html(tables["summary"]),
        f'<p class="muted">{escape(_NORMALIZATION_NOTE)}</p>',
        "<h2>Figures</h2>",
        *(_figure_html(name, fig) for name, fig in figures.items()),
        "<h2>Tables</h2>",
        _details("Per-module metrics (modules.csv)", _table_html(tables["modules"])),
        _details("Subspace similarity (similarity.csv)", _table_html(tables["similarity"])),
        _details(
            "Rank advice: what `spectra rank CKPT --energy τ` would give (k_τ per module)",
            _table_html(rank_advice(result)),
        ),
        _details("Skipped and unmatched tensors", _skipped(result)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _header(result: dict[str, Any], timestamp: str | None) -> str:
    parts = [f"spectra {escape(str(result.get('spectra_version', '?')))}"]
    if timestamp is not None:
        parts.append(escape(timestamp))
    return f'<p class="muted">Generated by {" · ".join(parts)}.</p>'


def _inputs(result: dict[str, Any]) -> str:
    colors = method_colors(result)
    rows = []
    for inp in result.get("inputs", []):
        swatch = f'<span class="swatch" style="background:{colors[inp["label"]]}"></span>'
        config = json.dumps(inp.get("config", {}), sort_keys=True, ensure_ascii=False)
        rows.append(
            f"<tr><td>{swatch}{escape(inp['label'])}</td><td>{escape(str(inp.get('kind')))}</td>"
            f"<td>{escape(str(inp.get('path')))}</td><td><code>{escape(config)}</code></td></tr>"
        )
    base = result.get("base")
    base_line = f"<p>Base: <code>{escape(base['path'])}</code></p>" if base else "<p>No base.</p>"
    return (
        base_line + "<table><tr><th>method</th><th>kind</th><th>path</th><th>config</th>"
        "</tr>" + "".join(rows) + "</table>"
    )


def _settings(result: dict[str, Any]) -> str:
    items = sorted(result.get("settings", {}).items())
    return _kv_table([(k, json.dumps(v, ensure_ascii=False)) for k, v in items])


def _verdicts(diagnosis: Diagnosis) -> str:
    rows = "".join(
        f"<tr><td>{escape(m.label)}</td><td>{escape(m.kind)}</td>"
        f'<td class="verdict">{escape(m.verdict)}</td>'
        f"<td>{'<br>'.join(escape(r) for r in m.reasons)}</td></tr>"
        for m in diagnosis.methods
    )
    rules = "<br>".join(escape(line) for line in diagnosis.thresholds.describe().splitlines())
    return (
        f'<p>Overall: <span class="verdict">{escape(diagnosis.overall)}</span></p>'
        "<table><tr><th>method</th><th>kind</th><th>verdict</th><th>modules flagged</th></tr>"
        f'{rows}</table><p class="muted">Rules: {rules}</p>'
    )


def _figure_html(name: str, fig: Figure) -> str:
    caption = FIGURES[name][1] if name in FIGURES else name
    data = base64.b64encode(render_figure(fig, "png")).decode("ascii")
    return (
        f'<figure id="{escape(name)}"><img alt="{escape(caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{escape(name)}: {escape(caption)}'
        "</figcaption></figure>"
    )


def _table_html(table: Table) -> str:
    if not table.rows:
        return '<p class="muted">(empty)</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return (
        f'<td class="num">{escape(display_cell(value))}</td>'
        if numeric
        else (f"<td>{escape(display_cell(value))}</td>")
    )


def _kv_table(items: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def _details(summary: str, content: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{content}</details>"


def _skipped(result: dict[str, Any]) -> str:
    items = [
        (label, json.dumps(info, sort_keys=True, ensure_ascii=False))
        for label, info in (result.get("skipped") or {}).items()
    ]
    return _kv_table(items) if items else '<p class="muted">(nothing skipped)</p>'
