"""Verdicts: what an analysis result says about each module and each method, in words.

:func:`diagnose` reads an analysis result (``spectra.analysis.analyze`` or a saved
``compare --json`` file) and applies :class:`Thresholds` to the stored metrics; it computes no
spectrum itself. Each module gets every verdict whose rule it meets (its ``flags``) and the
most severe one as its ``verdict``; each method gets a verdict from the share of its modules
flagged; the overall verdict is the most severe method verdict.

Verdicts, most severe first (:data:`SEVERITY`):

* ``nonfinite`` — ΔW holds NaN/Inf (a broken checkpoint or a diverged run);
* ``unchanged`` — ΔW = 0 (e.g. an adapter whose B was never trained);
* ``collapsed`` — the parallel modules of a MultiLoRA layer span the same subspace;
* ``dominated`` — one singular direction carries the update;
* ``intruders`` — W0 + ΔW has top singular vectors that W0 does not have;
* ``amplified`` — ΔW is much larger along its own top directions than W0 is there;
* ``ok`` — none of the above.

Overall rule: a method reaches a verdict when at least ``overall_share`` (default 50%) of the
modules the rule applies to meet it — except ``nonfinite``, reached by a single module. The
overall verdict is the most severe verdict any method reaches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from spectra.errors import OptionError

Verdict = Literal[
    "nonfinite", "unchanged", "collapsed", "dominated", "intruders", "amplified", "ok"
]
SEVERITY: tuple[Verdict, ...] = (
    "nonfinite",
    "unchanged",
    "collapsed",
    "dominated",
    "intruders",
    "amplified",
    "ok",
)


@dataclass(frozen=True)
class Thresholds:
    """The rules behind the verdicts; every field can be overridden (``spectra diagnose``
    options of the same name).

    Attributes:
        dominated_top1_energy: A module is ``dominated`` when its top-1 energy share
            σ_1² / Σ σ_i² is at least this (default 0.5: half of ‖ΔW‖_F² lies in one
            direction, so to first order the update is rank one). For scale: a flat rank-r
            spectrum has share 1/r (0.125 at r = 8).
        dominated_erank_ratio: ... or when effective rank / rank is at most this (default
            0.2: the update uses at most a fifth of the rank it has — e.g. ≤ 1.6 effective
            directions of a rank-8 LoRA, or ≤ 154 of a dense 768 × 768 update). Rank is
            min(R, out, in) for a factored update of inner rank R, min(out, in) for a dense
            one. A flat spectrum gives 1.
        dominated_min_rank: Modules of smaller rank are not judged for dominance (default 2:
            a rank-1 update is one direction by construction, not by training).
        collapsed_phi: A MultiLoRA module is ``collapsed`` when the mean off-diagonal φ
            between its n parallel modules, on the left or the right side, is at least this
            (default 0.9: on average 90% of one module's subspace lies in another's — mean
            squared cosine of the principal angles — so the n modules act as one LoRA, the
            failure MultiLoRA's initialization is meant to prevent). Random rank-r subspaces
            of R^d give φ ≈ r/d (≈ 0.01 at r = 8, d = 768).
        amplification: A module is ``amplified`` when ‖ΔW‖_F / ‖Uᵀ W0 V‖_F is at least this
            (default 10: ΔW is an order of magnitude larger along its top-r directions than
            W0 is there; the LoRA paper reports ≈ 21.5 at r = 4 and ≈ 2 at r = 64, GPT-3 W_q).
            Descriptive: LoRA amplifies by design; the flag says how strongly.
        intruder_count: A module has ``intruders`` when at least this many of the top-k
            singular vectors of W0 + ΔW have max |cos| < ε against every left singular vector
            of W0 (default 1; Shuttleworth et al. 2024). k and ε are the analysis settings
            and are stated in each reason.
        overall_share: A method reaches a verdict when at least this share of the modules the
            rule applies to meet it (default 0.5); ``nonfinite`` is reached by one module.
    """

    dominated_top1_energy: float = 0.5
    dominated_erank_ratio: float = 0.2
    dominated_min_rank: int = 2
    collapsed_phi: float = 0.9
    amplification: float = 10.0
    intruder_count: int = 1
    overall_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("dominated_top1_energy", "dominated_erank_ratio", "collapsed_phi"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check_range("overall_share", self.overall_share, 0.0, 1.0, low_open=True)
        if not (self.amplification > 0 and math.isfinite(self.amplification)):
            raise OptionError(
                f"--amplification must be a positive number, got {self.amplification}"
            )
        for name in ("dominated_min_rank", "intruder_count"):
            if getattr(self, name) < 1:
                raise OptionError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )

    def describe(self) -> str:
        """One line per rule, for the CLI and the report."""
        return "\n".join(
            (
                f"dominated: top-1 energy share >= {self.dominated_top1_energy:g} or effective "
                f"rank / rank <= {self.dominated_erank_ratio:g} (modules of rank >= "
                f"{self.dominated_min_rank})",
                f"collapsed: mean off-diagonal phi between MultiLoRA's parallel modules >= "
                f"{self.collapsed_phi:g} (left or right)",
                f"intruders: intruder dimensions >= {self.intruder_count}",
                f"amplified: amplification factor >= {self.amplification:g}",
                f"a method gets a verdict when >= {self.overall_share:.0%} of its modules do "
                "(nonfinite: any module)",
            )
        )


def _check_range(name: str, value: float, lo: float, hi: float, *, low_open: bool = False) -> None:
    ok = (lo < value if low_open else lo <= value) and value <= hi
    if not ok:
        interval = f"{'(' if low_open else '['}{lo:g}, {hi:g}]"
        raise OptionError(f"--{name.replace('_', '-')} must be in {interval}, got {value}")


@dataclass(frozen=True)
class ModuleVerdict:
    """Verdict of one module of one method.

    Attributes:
        module: Module path.
        label: Method label.
        verdict: The most severe of ``flags``, or ``"ok"``.
        flags: Every verdict whose rule the module meets, most severe first.
        reasons: One sentence with the numbers per flag (or the key numbers when ok).
        judged: The rules that applied to this module (e.g. no ``collapsed`` for a LoRA).
    """

    module: str
    label: str
    verdict: Verdict
    flags: tuple[Verdict, ...]
    reasons: tuple[str, ...]
    judged: tuple[Verdict, ...]


@dataclass(frozen=True)
class MethodVerdict:
    """Verdict of one method (one input checkpoint) over its modules.

    Attributes:
        label: Method label.
        kind: Checkpoint kind.
        verdict: The most severe verdict reached, or ``"ok"``.
        flags: Every verdict reached, most severe first.
        counts: Verdict → number of modules flagged with it.
        judged: Verdict → number of modules its rule applied to.
        reasons: One line per verdict that flagged any module.
    """

    label: str
    kind: str
    verdict: Verdict
    flags: tuple[Verdict, ...]
    counts: dict[str, int]
    judged: dict[str, int]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`diagnose` concluded.

    Attributes:
        overall: The most severe method verdict (``"ok"`` when none is reached).
        methods: One verdict per method, in input order.
        modules: One verdict per (module, method) row of the result, in result order.
        thresholds: The rules applied.
        settings: The analysis settings the metrics were computed with (intruder k, ε, ...).
    """

    overall: Verdict
    methods: tuple[MethodVerdict, ...]
    modules: tuple[ModuleVerdict, ...]
    thresholds: Thresholds
    settings: dict[str, Any] = field(default_factory=dict)

    def reached(self, verdict: str) -> bool:
        """True when any method reached ``verdict`` (``spectra diagnose --fail-on``)."""
        if verdict not in SEVERITY:
            raise OptionError(f"unknown verdict {verdict!r}; choose one of {', '.join(SEVERITY)}")
        return any(verdict in m.flags for m in self.methods) or (
            verdict == "ok" and self.overall == "ok"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``--json`` output and the report)."""
        return asdict(self)


def mean_off_diagonal(phi: Sequence[Sequence[float | None]]) -> float | None:
    """Mean of φ[i][j] over i ≠ j, skipping missing (None/NaN) entries.

    Args:
        phi: (n, n) inter-module similarity of one MultiLoRA layer.

    Returns:
        The mean, or None when no off-diagonal entry is present (n < 2, or all missing).
    """
    vals = [
        float(v)
        for i, row in enumerate(phi)
        for j, v in enumerate(row)
        if i != j and v is not None and math.isfinite(float(v))
    ]
    return sum(vals) / len(vals) if vals else None


def diagnose(result: dict[str, Any], thresholds: Thresholds = Thresholds()) -> Diagnosis:
    """Apply ``thresholds`` to every module of an analysis result.

    Args:
        result: Analysis result (``spectra.analysis.analyze`` / ``spectra compare --json``).
        thresholds: The rules (see :class:`Thresholds` for each default and why).

    Returns:
        Module verdicts, method verdicts (share rule) and the overall verdict.
    """
    settings = dict(result.get("settings", {}))
    modules = tuple(_module_verdict(row, thresholds) for row in result.get("modules", []))
    kinds = {inp["label"]: inp.get("kind", "") for inp in result.get("inputs", [])}
    labels = list(kinds) + sorted({m.label for m in modules} - set(kinds))
    methods = tuple(
        _method_verdict(
            label, kinds.get(label, ""), [m for m in modules if m.label == label], thresholds
        )
        for label in labels
    )
    overall = _most_severe([m.verdict for m in methods])
    return Diagnosis(
        overall=overall, methods=methods, modules=modules, thresholds=thresholds, settings=settings
    )


def _most_severe(verdicts: Sequence[Verdict]) -> Verdict:
    return min(verdicts, key=SEVERITY.index, default="ok")


# A rule's outcome on one module: None when it does not apply, else (met?, reason).
_Outcome = tuple[bool, str] | None


def _module_verdict(row: dict[str, Any], t: Thresholds) -> ModuleVerdict:
    metrics = row.get("metrics") or {}
    if row.get("nonfinite"):
        outcomes: dict[Verdict, _Outcome] = {"nonfinite": (True, "ΔW has NaN/Inf entries")}
    elif metrics.get("frobenius_norm") == 0.0:
        outcomes = {"unchanged": (True, "ΔW = 0: the module did not change")}
    else:
        outcomes = {
            "collapsed": _collapsed(row, t),
            "dominated": _dominated(row, metrics, t),
            "intruders": _intruders(row.get("base_metrics"), t),
            "amplified": _amplified(row.get("base_metrics"), t),
        }
    applied = {v: o for v, o in outcomes.items() if o is not None}
    flags = tuple(v for v in SEVERITY if v in applied and applied[v][0])
    reasons = tuple(applied[v][1] for v in flags) or (_ok_reason(metrics, row),)
    return ModuleVerdict(
        module=row["module"],
        label=row["label"],
        verdict=flags[0] if flags else "ok",
        flags=flags,
        reasons=reasons,
        judged=tuple(v for v in SEVERITY if v in applied),
    )


def _dominated(row: dict[str, Any], metrics: dict[str, Any], t: Thresholds) -> _Outcome:
    # the most nonzero σ ΔW can have: min(R, out, in) (a MultiLoRA's n·r may exceed out or in)
    rank = min(row.get("rank") or 0, *row.get("shape", ()))
    top1, erank = metrics.get("top1_energy"), metrics.get("effective_rank")
    if rank < t.dominated_min_rank or top1 is None or erank is None:
        return None
    ratio = erank / rank
    if top1 >= t.dominated_top1_energy:
        return True, f"top-1 energy share {top1:.3f} >= {t.dominated_top1_energy:g}"
    if ratio <= t.dominated_erank_ratio:
        return True, (
            f"effective rank {erank:.2f} / rank {rank} = {ratio:.3f} <= {t.dominated_erank_ratio:g}"
        )
    return False, f"top-1 energy share {top1:.3f}, effective rank {erank:.2f} / rank {rank}"


def _collapsed(row: dict[str, Any], t: Thresholds) -> _Outcome:
    block = row.get("multilora")
    if not block:
        return None
    left, right = (
        mean_off_diagonal(block.get("phi_left", [])),
        mean_off_diagonal(block.get("phi_right", [])),
    )
    if left is None and right is None:
        return None
    worst = max(v for v in (left, right) if v is not None)
    text = (
        f"mean off-diagonal phi between the {block.get('n')} parallel modules: "
        f"left {_fmt(left)}, right {_fmt(right)}"
    )
    return worst >= t.collapsed_phi, f"{text} (threshold {t.collapsed_phi:g})"


def _intruders(base: dict[str, Any] | None, t: Thresholds) -> _Outcome:
    count = _base_metric(base, "intruder_count")
    if base is None or count is None:
        return None
    return count >= t.intruder_count, (
        f"{int(count)} intruder dimension(s) among the top-{base.get('intruder_k')} singular "
        f"vectors of W0 + ΔW (max |cos| < eps = {base.get('intruder_eps')}), energy share "
        f"{_fmt(base.get('intruder_energy'))}"
    )


def _amplified(base: dict[str, Any] | None, t: Thresholds) -> _Outcome:
    amp = _base_metric(base, "amplification")
    if base is None or amp is None:
        return None
    return amp >= t.amplification, (
        f"amplification ||ΔW||_F / ||U^T W0 V||_F = {amp:.3g} "
        f"(r = {base.get('amplification_r')}; threshold {t.amplification:g})"
    )


def _base_metric(base: dict[str, Any] | None, key: str) -> float | None:
    """``base[key]`` as a float; None when the row has no base metrics or not this one."""
    return None if not base or base.get(key) is None else float(base[key])


def _ok_reason(metrics: dict[str, Any], row: dict[str, Any]) -> str:
    return (
        f"top-1 energy share {_fmt(metrics.get('top1_energy'))}, effective rank "
        f"{_fmt(metrics.get('effective_rank'))} / rank {row.get('rank')}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _method_verdict(
    label: str, kind: str, modules: list[ModuleVerdict], t: Thresholds
) -> MethodVerdict:
    counts = {v: sum(v in m.flags for m in modules) for v in SEVERITY[:-1]}
    judged = {v: sum(v in m.judged for m in modules) for v in SEVERITY[:-1]}
    # unchanged/nonfinite modules are judged by no other rule, but they count in every share
    for v in ("unchanged", "nonfinite"):
        judged[v] = len(modules)
    reached = tuple(
        v
        for v in SEVERITY[:-1]
        if counts[v] > 0 and (v == "nonfinite" or counts[v] / judged[v] >= t.overall_share)
    )
    reasons = tuple(
        f"{v}: {counts[v]} of {judged[v]} modules ({counts[v] / judged[v]:.0%})"
        + (" -> reached" if v in reached else f" (below {t.overall_share:.0%})")
        for v in SEVERITY[:-1]
        if counts[v] > 0
    )
    return MethodVerdict(
        label=label,
        kind=kind,
        verdict=_most_severe(reached),
        flags=reached,
        counts=counts,
        judged=judged,
        reasons=reasons or (f"ok: none of {len(modules)} modules flagged",),
    )


def _methods_table(methods: Sequence[MethodVerdict]) -> list[str]:
    """One row per method: label, kind, modules, verdict, and how many modules each reached
    verdict flagged (several adapters diagnosed in one run)."""
    rows = [
        (
            m.label,
            m.kind,
            str(m.judged.get("unchanged", 0)),  # every module is judged for "unchanged"
            m.verdict,
            ", ".join(f"{v} {m.counts[v]}" for v in SEVERITY[:-1] if m.counts.get(v)) or "-",
        )
        for m in methods
    ]
    headers = ("method", "kind", "modules", "verdict", "flagged modules")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_text(diagnosis: Diagnosis, *, all_modules: bool = False) -> str:
    """Plain-text verdicts for the CLI.

    Args:
        diagnosis: What :func:`diagnose` returned.
        all_modules: List every module, not only the flagged ones.

    Returns:
        Lines: the overall verdict, the rules, one block per method, then the modules.
    """
    lines = [f"overall verdict: {diagnosis.overall}", ""]
    if len(diagnosis.methods) > 1:
        lines += [*_methods_table(diagnosis.methods), ""]
    lines += ["rules:"]
    lines += [f"  {line}" for line in diagnosis.thresholds.describe().splitlines()]
    for m in diagnosis.methods:
        lines += ["", f"{m.label} ({m.kind}): {m.verdict}"]
        lines += [f"  {reason}" for reason in m.reasons]
    shown = [m for m in diagnosis.modules if all_modules or m.flags]
    if shown:
        lines += ["", "modules:" if all_modules else "flagged modules:"]
        for m in shown:
            lines.append(f"  {m.label}  {m.module}: {m.verdict}")
            lines += [f"      {reason}" for reason in m.reasons]
    return "\n".join(lines) + "\n"
