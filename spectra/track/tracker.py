"""Dominance of the adapter while it trains: :class:`Tracker`, the framework-free hook.

Every ``every`` steps :meth:`Tracker.step` reads the live adapter (:class:`LiveAdapter`), computes
each module's row exactly as ``spectra compare`` does for the saved adapter
(:func:`spectra.analysis_module.analyze_module`: exact factored spectrum, dominance metrics,
MultiLoRA's inter-module φ), adds k90 (:func:`spectra.engine.metrics.energy_rank` at τ = 0.9),
summarises them per module type (mean and max over the layers), appends one line to a JSONL
file, and applies the ``diagnose`` rules (:func:`spectra.diagnose.diagnose`) for ``stop_on``.

It runs under ``torch.no_grad`` on detached tensors, draws no random numbers and changes no
parameter, buffer or RNG state: a tracked run trains bit for bit like an untracked one.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from spectra.analysis import AnalysisOptions
from spectra.analysis_module import Input, ModuleContext, analyze_module
from spectra.diagnose import Thresholds, diagnose, mean_off_diagonal
from spectra.engine.device import resolve_device
from spectra.engine.metrics import energy_rank
from spectra.errors import OptionError
from spectra.result_types import ModuleRow
from spectra.track.live import LIVE_PATH, LiveAdapter

DEFAULT_EVERY = 50
StopOn = Literal["dominated", "collapsed", "nonfinite"]
STOP_VERDICTS: tuple[str, ...] = ("dominated", "collapsed", "nonfinite")
# the per-module values logged and summarised (names of ModuleRow metrics, plus k90 and φ)
TRACKED = ("top1_energy", "effective_rank", "stable_rank", "k90")
LABEL = "live"


@dataclass(frozen=True)
class TrackRecord:
    """What one tracked step measured.

    Attributes:
        step: The training step.
        kind: ``lora``, ``dora`` or ``multilora``.
        modules: module path → {``module_type``, ``layer``, ``rank``, ``top1_energy``,
            ``effective_rank``, ``stable_rank``, ``k90``, ``verdict``; MultiLoRA also
            ``multilora_phi``: the larger of the mean off-diagonal φ between its n modules,
            left and right}. None for a value that is undefined (ΔW = 0, NaN).
        summary: ``<prefix>/<metric>/<module type | all>/<mean | max>`` → value, over the
            modules with a defined value; plus ``<prefix>/<verdict>_share`` for dominated
            (and collapsed) modules.
        verdict: The most severe verdict the diagnose rules give the adapter as a whole.
        reached: Every verdict the adapter reached (the diagnose share rule), most severe first.
        reasons: The diagnose lines behind ``verdict``.
        seconds: Wall time of the measurement.
        rows: The full ``modules`` rows, as ``spectra compare`` writes them.
    """

    step: int
    kind: str
    modules: dict[str, dict[str, Any]]
    summary: dict[str, float]
    verdict: str
    reached: tuple[str, ...]
    reasons: tuple[str, ...]
    seconds: float
    rows: list[ModuleRow] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSONL line (without the full rows)."""
        return {
            "step": self.step,
            "kind": self.kind,
            "verdict": self.verdict,
            "reached": list(self.reached),
            "reasons": list(self.reasons),
            "seconds": self.seconds,
            "summary": self.summary,
            "modules": self.modules,
        }


class Tracker:
    """Measure the adapter of a model every ``every`` steps; for plain training loops::

        tracker = Tracker(every=50, jsonl="run/spectra.jsonl", stop_on="dominated")
        for step, batch in enumerate(loader, start=1):
            ...  # forward, backward, optimizer.step()
            tracker.step(model, step)
            if tracker.should_stop:
                print(tracker.stop_message); break

    Args:
        every: Measure at steps that are multiples of this (≥ 1).
        jsonl: Append one JSON line per measured step to this file (created with its folder).
        stop_on: A diagnose verdict (``dominated``, ``collapsed``, ``nonfinite``): when the
            adapter as a whole reaches it (the ``diagnose`` share rule), :attr:`should_stop`
            becomes True with :attr:`stop_message`.
        thresholds: The diagnose rules (defaults of ``spectra diagnose``).
        adapter: PEFT adapter name; None: the one active adapter.
        modules, exclude: Regular expressions (``re.search``) choosing module paths, as
            ``spectra compare --modules / --exclude``.
        dtype: ``float32`` (default, as ``spectra compare``) or ``float64``.
        device: Where the spectra are computed (``cpu`` default; ``cuda`` when present).
        prefix: First component of every logged key.

    Raises:
        OptionError: An invalid setting.
    """

    def __init__(
        self,
        every: int = DEFAULT_EVERY,
        *,
        jsonl: str | Path | None = None,
        stop_on: StopOn | None = None,
        thresholds: Thresholds = Thresholds(),
        adapter: str | None = None,
        modules: str | None = None,
        exclude: str | None = None,
        dtype: Literal["float32", "float64"] = "float32",
        device: str = "cpu",
        prefix: str = "spectra",
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise OptionError(f"every must be a positive integer, got {every!r}")
        if stop_on is not None and stop_on not in STOP_VERDICTS:
            raise OptionError(
                f"stop_on must be one of {', '.join(STOP_VERDICTS)} or None, got {stop_on!r}"
            )
        self.every = every
        self.jsonl = None if jsonl is None else Path(jsonl)
        self.stop_on = stop_on
        self.thresholds = thresholds
        self.adapter = adapter
        self.prefix = prefix
        self.options = AnalysisOptions(
            modules=modules, exclude=exclude, dtype=dtype, device=device,
            against_base=False, similarity=False,
        )  # fmt: skip
        self._device = resolve_device(device)
        self.last: TrackRecord | None = None
        self.stop_message: str | None = None

    @property
    def should_stop(self) -> bool:
        """True once a measured step reached ``stop_on``."""
        return self.stop_message is not None

    def due(self, step: int) -> bool:
        """True when ``step`` is one to measure (a positive multiple of ``every``)."""
        return step > 0 and step % self.every == 0

    def step(self, model: nn.Module, step: int, *, write: bool = True) -> TrackRecord | None:
        """:meth:`measure` when ``step`` is due, else nothing (returns None)."""
        return self.measure(model, step, write=write) if self.due(step) else None

    def measure(self, model: nn.Module, step: int, *, write: bool = True) -> TrackRecord:
        """Measure the live adapter of ``model`` now.

        Args:
            model: See :class:`~spectra.track.live.LiveAdapter`.
            step: The step recorded.
            write: Append to the JSONL file (False on the non-main processes of a
                distributed run).

        Returns:
            The record (also kept as :attr:`last`).
        """
        start = time.perf_counter()
        with torch.no_grad():
            reader = LiveAdapter(model, adapter=self.adapter, dtype=self.options.torch_dtype)
            rows = self._rows(reader)
        record = self._record(step, reader.kind, rows, time.perf_counter() - start)
        self.last = record
        if write and self.jsonl is not None:
            self._append(record)
        if self.stop_on is not None and self.stop_on in record.reached:
            self.stop_message = (
                f"spectra.track: step {step}: the adapter reached '{self.stop_on}' "
                f"({'; '.join(record.reasons)}); training stopped"
            )
        return record

    def _rows(self, reader: LiveAdapter) -> list[ModuleRow]:
        names = [m.module for m in reader.modules() if self._selected(m.module)]
        if not names:
            raise OptionError(
                f"modules={self.options.modules!r} / exclude={self.options.exclude!r} leave none "
                f"of the {len(reader.modules())} adapted modules"
            )
        ctx = ModuleContext(
            options=self.options,
            device=self._device,
            base=None,
            inputs=[Input(label=LABEL, path=LIVE_PATH, reader=reader)],  # type: ignore[arg-type]
            modules_of={LABEL: set(names)},
        )
        return [row for name in sorted(names) for row in analyze_module(ctx, name)[0]]

    def _selected(self, module: str) -> bool:
        o = self.options
        return (o.modules is None or re.search(o.modules, module) is not None) and (
            o.exclude is None or re.search(o.exclude, module) is None
        )

    def _record(self, step: int, kind: str, rows: list[ModuleRow], seconds: float) -> TrackRecord:
        result = {"modules": rows, "inputs": [{"label": LABEL, "kind": kind}]}
        diagnosis = diagnose(result, self.thresholds)
        verdicts = {m.module: m.verdict for m in diagnosis.modules}
        method = diagnosis.methods[0]
        modules = {row["module"]: module_values(row, verdicts[row["module"]]) for row in rows}
        summary = summarize_values(modules, self.prefix)
        for verdict in ("dominated", "collapsed"):
            if method.judged.get(verdict):
                share = method.counts[verdict] / method.judged[verdict]
                summary[f"{self.prefix}/{verdict}_share"] = share
        return TrackRecord(
            step=step, kind=kind, modules=modules, summary=summary, verdict=method.verdict,
            reached=method.flags, reasons=method.reasons, seconds=seconds, rows=rows,
        )  # fmt: skip

    def _append(self, record: TrackRecord) -> None:
        assert self.jsonl is not None
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_json(), allow_nan=False) + "\n"
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(line)  # one whole line per write: a reader never sees half a record


def module_values(row: ModuleRow, verdict: str) -> dict[str, Any]:
    """The logged values of one module row: its dominance metrics, k90, verdict, and for
    MultiLoRA the larger mean off-diagonal φ between its parallel modules."""
    metrics = row.get("metrics") or {}
    values = torch.tensor(row["singular_values"], dtype=torch.float64)
    k90 = energy_rank(values, 0.9) if values.numel() else None
    out: dict[str, Any] = {
        "module_type": row["module_type"],
        "layer": row["layer"],
        "rank": row["rank"],
        "top1_energy": metrics.get("top1_energy"),
        "effective_rank": metrics.get("effective_rank"),
        "stable_rank": metrics.get("stable_rank"),
        "k90": k90 if k90 else None,  # 0: ΔW = 0, no energy to share
        "verdict": verdict,
    }
    block = row.get("multilora")
    if block:
        sides = [mean_off_diagonal(block.get(f"phi_{s}", [])) for s in ("left", "right")]
        present = [v for v in sides if v is not None]
        out["multilora_phi"] = max(present) if present else None
    return out


def summarize_values(modules: dict[str, dict[str, Any]], prefix: str) -> dict[str, float]:
    """Mean and max of every tracked value per module type and over all modules.

    Keys ``<prefix>/<metric>/<type | all>/<mean | max>``; a group whose values are all
    undefined is left out.
    """
    names = [*TRACKED, "multilora_phi"]
    groups: dict[str, list[dict[str, Any]]] = {"all": list(modules.values())}
    for values in modules.values():
        groups.setdefault(values["module_type"], []).append(values)
    out: dict[str, float] = {}
    for metric in names:
        for group, members in groups.items():
            xs = [float(v[metric]) for v in members if _defined(v.get(metric))]
            if xs:
                out[f"{prefix}/{metric}/{group}/mean"] = math.fsum(xs) / len(xs)
                out[f"{prefix}/{metric}/{group}/max"] = max(xs)
    return out


def _defined(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))
