"""Merged adapters: a full checkpoint whose weights already contain a LoRA.

Such a checkpoint *is* a full fine-tune (W_merged = W0 + s·B·A) and is read and analysed as
one. What gives it away is its spectrum: ΔW = W_merged − W0 has numerical rank r ≪ min(out, in),
where a real full fine-tune is (numerically) full rank. ``spectra inspect CKPT --base BASE``
reports it, module by module, from the engine's own numbers (one place per computation): the
exact singular values (:func:`spectra.engine.svd.spectrum`) and the numerical rank of
:func:`spectra.engine.metrics.dominance_metrics`, #{σ_i > σ_1 · max(out, in) · eps}, eps of the
compute dtype.

**choice**: a module "looks like a merged adapter" when 0 < numerical rank ≤
:data:`LOW_RANK_FRACTION` · min(out, in). Limit: the rounding of the stored weights adds noise
of size |W0| · eps(stored dtype) to ΔW; in float32 it stays far below the rank tolerance, but
bf16 / fp16 rounding of W_merged makes ΔW numerically full rank, so merged adapters saved in
half precision are not flagged (their numerical rank is still shown).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spectra.engine.metrics import dominance_metrics
from spectra.engine.svd import spectrum
from spectra.loaders.base import CheckpointReader

LOW_RANK_FRACTION = 0.25  # rank ≤ this · min(out, in) counts as ≪ min(out, in)


@dataclass(frozen=True)
class RankCheck:
    """The numerical rank of one module's ΔW.

    Attributes:
        module: Module name.
        shape: (out, in) of ΔW.
        numerical_rank: #{σ_i > σ_1 · max(out, in) · eps}; None when ΔW is not finite.
    """

    module: str
    shape: tuple[int, int]
    numerical_rank: int | None

    @property
    def low_rank(self) -> bool:
        """0 < rank ≤ LOW_RANK_FRACTION · min(out, in): the signature of a merged adapter."""
        r = self.numerical_rank
        return r is not None and 0 < r <= LOW_RANK_FRACTION * min(self.shape)


def check_ranks(reader: CheckpointReader, modules: Iterable[str] | None = None) -> list[RankCheck]:
    """The numerical rank of ΔW for each module (singular values only, one module at a time).

    Args:
        reader: An opened checkpoint (a full one with its base, for the merged-adapter check).
        modules: Module names to check (default: all of ``reader.modules()``).

    Returns:
        One :class:`RankCheck` per module, in the order given.
    """
    names = [i.module for i in reader.modules()] if modules is None else list(modules)
    checks = []
    for name in names:
        update = reader.update(name)
        metrics = dominance_metrics(spectrum(update))
        rank = metrics["numerical_rank"]
        checks.append(RankCheck(name, update.shape, None if rank is None else int(rank)))
    return checks


def merged_adapter_lines(checks: Sequence[RankCheck]) -> list[str]:
    """What to tell the user: one line per numerical rank shared by low-rank modules, one for
    modules whose ΔW is exactly zero; nothing for a (numerically) full-rank fine-tune."""
    by_rank: dict[int, list[RankCheck]] = defaultdict(list)
    for c in checks:
        if c.low_rank:
            assert c.numerical_rank is not None
            by_rank[c.numerical_rank].append(c)
    lines = []
    for rank, group in sorted(by_rank.items()):
        c = group[0]
        lines.append(
            f"ΔW is numerically rank {rank} in {len(group)} of {len(checks)} modules (e.g. "
            f"{c.module!r}, min(out, in) = {min(c.shape)}): this looks like a merged adapter "
            "(weights with a LoRA folded in); it is analysed as full fine-tuning, which it is"
        )
    zero = [c for c in checks if c.numerical_rank == 0]
    if zero:
        noun = "module" if len(zero) == 1 else "modules"
        lines.append(f"ΔW is zero in {len(zero)} {noun} (unchanged), e.g. {zero[0].module!r}")
    return lines
