"""What rank should each module's adapter have? Per-module ranks from the spectrum of ΔW.

For one module with singular values σ_1 ≥ … ≥ σ_m of ΔW (out × in), a rank-k adapter keeps at
best the energy E(k) = Σ_{i≤k} σ_i² (Eckart–Young) and costs k·(out + in) parameters.

* ``--energy τ``: each module gets k_τ, the smallest k with E(k) / E(m) ≥ τ
  (:func:`~spectra.engine.metrics.energy_rank`), clipped to [1, max_rank].
* ``--budget N``: ranks r_j ≥ 1 with Σ r_j·(out_j + in_j) ≤ N that keep the most total energy
  Σ_j E_j(r_j). Every module first gets rank 1; then the next rank of the module with the
  largest marginal energy per parameter σ_{k+1}² / (out + in) is added while it fits (a module
  whose next rank does not fit is closed: its later ranks cost the same and gain less).
  Each module's E is concave in k, so until the first increment that does not fit the greedy
  allocation is optimal for the budget it has spent; the result is within ``gap_bound`` (the
  energy of that first increment) of the optimum for N. With equal costs (out + in the same
  for every module) it is exactly optimal.

A module whose ΔW is exactly zero gets rank 0 (not adapted).
"""

from __future__ import annotations

import heapq
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spectra.engine.metrics import energy_rank
from spectra.engine.svd import spectrum
from spectra.errors import OptionError
from spectra.io import open_tensors
from spectra.loaders import open_checkpoint
from spectra.tables import Table


@dataclass(frozen=True, eq=False)
class ModuleSpectrum:
    """The spectrum of one module's ΔW, as rank allocation needs it.

    Attributes:
        module: Module path (the name the adapter will target).
        shape: (out, in) of ΔW.
        values: (m,) singular values, descending, float64.
    """

    module: str
    shape: tuple[int, int]
    values: torch.Tensor

    @property
    def cost(self) -> int:
        """Parameters per unit of rank: out + in (B: out × r, A: r × in)."""
        return self.shape[0] + self.shape[1]

    @property
    def cap(self) -> int:
        """The largest useful rank: the number of non-zero singular values."""
        return int((self.values > 0).sum())

    def kept(self, k: int) -> float:
        """E(k) = Σ_{i≤k} σ_i²."""
        return float((self.values[:k] ** 2).sum())


@dataclass(frozen=True)
class ModuleRank:
    """The rank chosen for one module and what it keeps.

    Attributes:
        module: Module path.
        shape: (out, in) of ΔW.
        rank: Chosen rank (0: ΔW is zero, not adapted).
        energy_kept: E(rank) / E(m), None for a zero ΔW.
        params: rank·(out + in).
        relative_error: ‖ΔW − ΔW_rank‖_F / ‖ΔW‖_F = √(1 − energy_kept), None for a zero ΔW.
    """

    module: str
    shape: tuple[int, int]
    rank: int
    energy_kept: float | None
    params: int
    relative_error: float | None


@dataclass(frozen=True)
class RankPlan:
    """Ranks for every module, with totals.

    Attributes:
        modules: One :class:`ModuleRank` per module, sorted by name.
        energy_kept: Σ_j E_j(r_j) / Σ_j E_j(m_j) over all modules (None when all are zero).
        params: Σ_j r_j·(out_j + in_j).
        gap_bound: For ``--budget``, an upper bound on how much less total energy share than
            the optimum for the budget the plan keeps (0: optimal); None otherwise.
    """

    modules: list[ModuleRank]
    energy_kept: float | None
    params: int
    gap_bound: float | None = None

    @property
    def ranks(self) -> dict[str, int]:
        """Module → rank, for the adapted modules (rank ≥ 1)."""
        return {m.module: m.rank for m in self.modules if m.rank > 0}


def energy_ranks(
    spectra: Sequence[ModuleSpectrum], tau: float, max_rank: int | None = None
) -> dict[str, int]:
    """k_τ of every module, clipped to [1, min(max_rank, cap)]; 0 for a zero ΔW.

    Raises:
        OptionError: ``tau`` is not in (0, 1] or ``max_rank`` < 1.
    """
    if not 0.0 < tau <= 1.0:
        raise OptionError(f"--energy must be in (0, 1], got {tau}")
    _check_max_rank(max_rank)
    ranks = {}
    for s in spectra:
        k = energy_rank(s.values, tau)
        ranks[s.module] = 0 if k == 0 else max(1, min(k, _limit(s, max_rank)))
    return ranks


def budget_ranks(
    spectra: Sequence[ModuleSpectrum], budget: int, max_rank: int | None = None
) -> tuple[dict[str, int], float]:
    """Greedy allocation of ``budget`` parameters (see the module docstring).

    Args:
        spectra: The modules; zero ΔW get rank 0 and cost nothing.
        budget: N, the total Σ r·(out + in) allowed.
        max_rank: Upper limit on every rank (default: none besides the number of non-zero σ).

    Returns:
        (module → rank, gap bound): the energy (absolute, Σσ²) of the first increment that did
        not fit, 0.0 when none was refused; the optimum for N keeps at most that much more.

    Raises:
        OptionError: ``budget`` is smaller than one rank per (non-zero) module, or
            ``max_rank`` < 1.
    """
    _check_max_rank(max_rank)
    live = [s for s in spectra if s.cap > 0]
    floor = sum(s.cost for s in live)
    if budget < floor:
        raise OptionError(
            f"--budget {budget} is smaller than one rank per module: {len(live)} changed modules "
            f"need {floor} parameters at rank 1; raise --budget or select fewer modules"
        )
    ranks = {s.module: 0 for s in spectra} | {s.module: 1 for s in live}
    left = budget - floor
    heap = [_increment(s, 1) for s in live if _limit(s, max_rank) > 1]
    heapq.heapify(heap)
    by_name = {s.module: s for s in live}
    gap = 0.0
    while heap:
        _, name, k, gain = heapq.heappop(heap)  # add rank k + 1 to module name
        s = by_name[name]
        if s.cost > left:
            gap = gap or gain  # the first increment refused bounds the distance to optimum
            continue  # the module is closed: its later ranks cost the same
        ranks[name], left = k + 1, left - s.cost
        if k + 1 < _limit(s, max_rank):
            heapq.heappush(heap, _increment(s, k + 1))
    return ranks, gap


def choose_ranks(
    spectra: Sequence[ModuleSpectrum],
    *,
    energy: float | None = None,
    budget: int | None = None,
    max_rank: int | None = None,
) -> tuple[dict[str, int], float | None]:
    """Module → rank by exactly one rule: :func:`energy_ranks` (τ = ``energy``) or
    :func:`budget_ranks`.

    Returns:
        (module → rank, the budget's gap bound or None for ``energy``).

    Raises:
        OptionError: Neither or both rules given, or a rule's own error.
    """
    if (energy is None) == (budget is None):
        raise OptionError("pass exactly one of --energy and --budget")
    if energy is not None:
        return energy_ranks(spectra, energy, max_rank), None
    assert budget is not None
    return budget_ranks(spectra, budget, max_rank)


def plan(
    spectra: Sequence[ModuleSpectrum], ranks: dict[str, int], gap: float | None = None
) -> RankPlan:
    """The table of a rank choice: energy kept, error and parameters per module, and totals.

    Args:
        spectra: The modules.
        ranks: Module → rank (missing modules get 0).
        gap: Absolute energy gap bound from :func:`budget_ranks`, turned into a share here.
    """
    rows, kept, total, params = [], 0.0, 0.0, 0
    for s in sorted(spectra, key=lambda s: s.module):
        r = ranks.get(s.module, 0)
        energy, e_r = s.kept(len(s.values)), s.kept(r)
        share = e_r / energy if energy > 0 else None
        error = None if share is None else max(0.0, 1.0 - share) ** 0.5
        rows.append(ModuleRank(s.module, s.shape, r, share, r * s.cost, error))
        kept, total, params = kept + e_r, total + energy, params + r * s.cost
    gap_share = None if gap is None else (gap / total if total > 0 else 0.0)
    return RankPlan(rows, kept / total if total > 0 else None, params, gap_share)


def checkpoint_spectra(
    ckpt: Path, *, base: Path | None = None, modules: str | None = None
) -> tuple[list[ModuleSpectrum], list[str]]:
    """The spectrum of every module of a checkpoint spectra reads, one module at a time.

    Args:
        ckpt: A full fine-tune (needs ``base``) or any adapter.
        base: The base checkpoint.
        modules: A regex; only module paths it finds (``re.search``) are kept.

    Returns:
        (the selected modules' spectra, every module path of the checkpoint).

    Raises:
        OptionError: ``modules`` is not a valid regex or selects nothing.
        SpectraError: Whatever the loaders refuse.
    """
    try:
        pattern = re.compile(modules) if modules is not None else None
    except re.error as e:
        raise OptionError(f"--modules {modules!r} is not a valid regex ({e})") from e
    reader = open_checkpoint(ckpt, base=open_tensors(base) if base is not None else None)
    names = [i.module for i in reader.modules()]
    chosen = [n for n in names if pattern is None or pattern.search(n)]
    if not chosen:
        raise OptionError(f"--modules {modules!r} selects none of the {len(names)} modules")
    out = []
    for name in chosen:
        update = reader.update(name)
        out.append(ModuleSpectrum(name, update.shape, spectrum(update).values.to(torch.float64)))
    return out, names


def _increment(s: ModuleSpectrum, k: int) -> tuple[float, str, int, float]:
    """Heap entry for adding rank k + 1: (−gain per parameter, name, k, gain σ_{k+1}²)."""
    gain = float(s.values[k]) ** 2
    return (-gain / s.cost, s.module, k, gain)


def _limit(s: ModuleSpectrum, max_rank: int | None) -> int:
    return s.cap if max_rank is None else min(s.cap, max_rank)


def _check_max_rank(max_rank: int | None) -> None:
    if max_rank is not None and max_rank < 1:
        raise OptionError(f"--max-rank must be at least 1, got {max_rank}")


ADVICE_TAUS = (0.90, 0.95, 0.99)


def rank_advice(result: Mapping[str, Any], taus: Sequence[float] = ADVICE_TAUS) -> Table:
    """What ``spectra rank CKPT --energy τ`` would give, per checkpoint of an analysis result.

    Per checkpoint and τ: the per-module ranks k_τ (:func:`energy_ranks`, no ``--max-rank``),
    summarised as the number of modules, min / median / max rank, the adapter's parameter
    count Σ_j k_τ,j·(out_j + in_j) and the energy share kept Σ_j E_j(k_τ,j) / Σ_j E_j. Modules
    whose spectrum is not complete (randomized SVD: ``truncated``), non-finite or zero are
    left out, as ``spectra rank`` needs every singular value.

    Args:
        result: An analysis result (``spectra compare --json``).
        taus: Energy shares τ in (0, 1].

    Returns:
        The table ``rank_advice`` (one row per checkpoint × τ).
    """
    header = (
        "label", "tau", "modules", "min_rank", "median_rank", "max_rank", "params",
        "energy_kept",
    )  # fmt: skip
    rows = []
    for inp in result.get("inputs", []):
        label = inp["label"]
        spectra = [
            ModuleSpectrum(
                m["module"],
                (int(m["shape"][0]), int(m["shape"][1])),
                torch.tensor(m["singular_values"], dtype=torch.float64),
            )
            for m in result.get("modules", [])
            if m["label"] == label
            and not m.get("nonfinite")
            and not m.get("truncated")
            and m.get("metrics")
            and all(v is not None for v in m["singular_values"])
        ]
        spectra = [s for s in spectra if s.cap > 0]
        if not spectra:
            continue
        for tau in taus:
            chosen = plan(spectra, energy_ranks(spectra, tau))
            ranks = sorted(r.rank for r in chosen.modules)
            rows.append(
                (label, tau, len(ranks), ranks[0], float(statistics.median(ranks)), ranks[-1],
                 chosen.params, chosen.energy_kept)
            )  # fmt: skip
    return Table("rank_advice", header, tuple(rows))
