"""What to tell the user about the comparison against the base, from a result alone.

* intruder dimensions skipped by the default rule (:mod:`spectra.engine.intruder_policy`): one
  line with the estimated cost and the option that computes them;
* a base that does not look like the checkpoint's starting point: when the median over
  modules of ‖ΔW‖_F / ‖W0‖_F reaches ``settings.unrelated_threshold`` (default 0.5). A
  fine-tune moves its weights by a small fraction of their size; two independently trained
  models of one architecture differ by about √2 · ‖W0‖_F in every module.
"""

from __future__ import annotations

from typing import Any

from spectra.engine.intruder_policy import IntruderPlan

__all__ = ["base_notes", "intruders_skipped_line", "unrelated_lines"]


def intruders_skipped_line(settings: dict[str, Any]) -> str | None:
    """The one line saying that ``auto`` skipped intruder dimensions, or None."""
    if "intruders_run" not in settings:
        return None
    plan = IntruderPlan(
        mode=settings.get("intruders", "auto"),
        run=bool(settings["intruders_run"]),
        pairs=int(settings.get("intruder_pairs", 0)),
        estimated_seconds=float(settings.get("intruder_estimated_seconds", 0.0)),
    )
    return plan.skipped_line()


def unrelated_lines(result: dict[str, Any]) -> list[str]:
    """One warning per checkpoint whose median relative norm is at least the threshold."""
    threshold = result.get("settings", {}).get("unrelated_threshold")
    if threshold is None:
        return []
    lines = []
    for row in result.get("summary", []):
        median = row.get("median_relative_norm")
        if median is not None and median >= threshold:
            lines.append(
                f"{row['label']}: median ‖ΔW‖_F / ‖W0‖_F = {median:.2f} over "
                f"{row.get('changed_modules', row.get('modules'))} modules (≥ {threshold:g}): "
                "these look like separately trained models, not a fine-tune of this base "
                "(--unrelated-threshold changes the limit)"
            )
    return lines


def base_notes(result: dict[str, Any]) -> list[str]:
    """Every line above, in order (empty when there is nothing to say)."""
    skipped = intruders_skipped_line(result.get("settings", {}))
    return ([skipped] if skipped else []) + unrelated_lines(result)
