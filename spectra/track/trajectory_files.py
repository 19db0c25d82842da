"""A trajectory on disk: ``trajectory.json`` (everything) and two CSV tables, written
atomically; and the JSON read back for redrawing.

Tables (one header line, comma-separated, ``""`` for an undefined value):

* ``trajectory_metrics.csv``: one row per checkpoint × module: step, label, module, layer,
  module_type, rank, and the metrics of :data:`CSV_METRICS`;
* ``trajectory_phi.csv``: one row per module × side × pair: module, layer, module_type, side,
  relation (``consecutive`` | ``last``), step_a, step_b, k, phi (φ(k, k)).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spectra.errors import FileFormatError
from spectra.io.atomic import write_text_atomic
from spectra.io.jsonfile import read_json
from spectra.track.trajectory import Trajectory

CSV_METRICS = (
    "top1_energy",
    "effective_rank",
    "stable_rank",
    "spectral_entropy",
    "frobenius_norm",
    "spectral_norm",
    "numerical_rank",
)
_PHI_COLUMNS = (
    "module",
    "layer",
    "module_type",
    "side",
    "relation",
    "step_a",
    "step_b",
    "k",
    "phi",
)


def metrics_table(traj: Trajectory) -> str:
    """``trajectory_metrics.csv`` as text."""
    header = ["step", "label", "module", "layer", "module_type", "rank", *CSV_METRICS, "k90"]
    rows = []
    for row in traj["modules"]:
        metrics = row.get("metrics") or {}
        rows.append(
            [row["step"], row["label"], row["module"], row["layer"], row["module_type"],
             row["rank"], *(metrics.get(m) for m in CSV_METRICS), row.get("k90")]
        )  # fmt: skip
    return _csv(header, rows)


def phi_table(traj: Trajectory) -> str:
    """``trajectory_phi.csv`` as text."""
    return _csv(list(_PHI_COLUMNS), [[r[c] for c in _PHI_COLUMNS] for r in traj["phi"]])  # type: ignore[literal-required]


def _csv(header: list[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def save_trajectory(traj: Trajectory, out_dir: str | Path) -> list[Path]:
    """Write ``trajectory.json``, ``trajectory_metrics.csv`` and ``trajectory_phi.csv`` into
    ``out_dir`` (created), each atomically.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    text = json.dumps(traj, indent=1, allow_nan=False) + "\n"
    return [
        write_text_atomic(out / "trajectory.json", text),
        write_text_atomic(out / "trajectory_metrics.csv", metrics_table(traj)),
        write_text_atomic(out / "trajectory_phi.csv", phi_table(traj)),
    ]


def load_trajectory(path: str | Path) -> Trajectory:
    """A ``trajectory.json`` written by :func:`save_trajectory`.

    Raises:
        FileFormatError: Missing, not JSON, or not a trajectory (no ``checkpoints``/``phi``).
    """
    data = read_json(path, what="trajectory JSON", fix="write it with spectra trajectory --out")
    if not isinstance(data, dict) or not {"checkpoints", "modules", "phi"} <= set(data):
        raise FileFormatError(
            "not a spectra trajectory (needs 'checkpoints', 'modules' and 'phi'); write it "
            "with spectra trajectory --out",
            path=path,
        )
    return data  # type: ignore[return-value]


def render_text(traj: Trajectory) -> str:
    """A table, one line per checkpoint: means over its modules of the top-1 energy share,
    effective rank and k90, and of φ(k, k) (left side) with the previous and the last
    checkpoint (per module type: ``trajectory_metrics.csv`` / ``trajectory_phi.csv``)."""
    header = (
        f"{'step':>8}  {'checkpoint':<20} {'top1':>6} {'erank':>8} {'k90':>6} "
        f"{'phi_prev':>8} {'phi_last':>8}"
    )
    lines = [header]
    for c in traj["checkpoints"]:
        rows = [r for r in traj["modules"] if r["step"] == c["step"]]
        metrics = [r.get("metrics") or {} for r in rows]
        top1 = _mean([m.get("top1_energy") for m in metrics])
        erank = _mean([m.get("effective_rank") for m in metrics])
        k90 = _mean([r.get("k90") for r in rows])
        prev = _phi_mean(traj, "consecutive", "step_b", c["step"])
        last = _phi_mean(traj, "last", "step_a", c["step"])
        lines.append(
            f"{c['step']:>8}  {c['label'][:20]:<20} {_fmt(top1, 3):>6} {_fmt(erank, 2):>8} "
            f"{_fmt(k90, 1):>6} {_fmt(prev, 3):>8} {_fmt(last, 3):>8}"
        )
    lines.append(
        "means over modules; top1 = σ₁²/Σσ², erank = effective rank, k90 = k at 90 % energy, "
        "phi = φ(k, k) of the left singular vectors with the previous / the last checkpoint"
    )
    return "\n".join(lines) + "\n"


def _phi_mean(traj: Trajectory, relation: str, key: str, step: int) -> float | None:
    return _mean(
        [p["phi"] for p in traj["phi"]
         if p["relation"] == relation and p["side"] == "left" and p[key] == step]  # type: ignore[literal-required]
    )  # fmt: skip


def _mean(values: list[Any]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
