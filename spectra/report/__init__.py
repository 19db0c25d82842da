"""The shareable report: a self-contained HTML page, the result JSON and CSV tables."""

from spectra.report.html import render_html, write_report
from spectra.tables import all_tables, write_tables

__all__ = ["all_tables", "render_html", "write_report", "write_tables"]
