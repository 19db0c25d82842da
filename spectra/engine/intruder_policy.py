"""When intruder dimensions are computed: their cost, and the default rule.

Intruder dimensions need two dense SVDs per module (all left singular vectors of W0, the top-k
of W0 + ΔW), O(N·n²) each for an (out, in) weight with N = max(out, in), n = min(out, in).
Everything else ``compare`` does against the base (amplification factor, relative norms) costs
a few passes over W0, and a LoRA's own spectrum O((out + in)·R²): at model scale the intruder
SVDs would be almost all of the run. So:

* ``intruders="always"`` (``--intruders``) computes them, ``"never"`` (``--no-intruders``) not;
* ``"auto"`` (the default) computes them only when their estimated time over the whole run is
  at most :data:`INTRUDER_AUTO_SECONDS`; otherwise they are skipped and the CLI says so in one
  line, with the estimate.

The estimate is :data:`INTRUDER_SECONDS_PER_UNIT` · Σ N·n² over every (module, checkpoint) pair
that has a base weight: a constant, so the decision does not depend on the machine or its load.
It comes from the dense SVD timings of the project's 2-core CPU without other load
(docs/benchmarks.md: a 4096² singular-value SVD in about 1.9 s; with all vectors, plus the top-k
of W0 + ΔW, about five times that); ``tests/benchmarks/bench_default.py`` prints the value
measured where it runs (docs/performance.md). Machines with more cores are faster than the
estimate; a W0 whose left singular vectors are in the cache (:mod:`spectra.engine.cache`)
costs less.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

IntruderMode = Literal["auto", "always", "never"]
INTRUDER_MODES: tuple[IntruderMode, ...] = ("auto", "always", "never")

INTRUDER_AUTO_SECONDS = 10.0  # "auto" runs intruders when the whole run's estimate is ≤ this
INTRUDER_SECONDS_PER_UNIT = 1.5e-10  # estimated seconds per N·n² (2 threads; see module doc)


def intruder_work(shape: tuple[int, int]) -> int:
    """N·n², N = max(out, in), n = min(out, in): the size of the SVDs intruders need."""
    big, small = max(shape), min(shape)
    return big * small * small


@dataclass(frozen=True)
class IntruderPlan:
    """Whether this run computes intruder dimensions, and why.

    Attributes:
        mode: What was asked: ``"auto"``, ``"always"`` or ``"never"``.
        run: Whether they are computed.
        pairs: (module, checkpoint) pairs that have a base weight (what intruders would cover).
        estimated_seconds: Estimated time of their SVDs over the run (see the module doc).
    """

    mode: IntruderMode
    run: bool
    pairs: int
    estimated_seconds: float

    def skipped_line(self) -> str | None:
        """One line for the user when ``auto`` skipped them; None otherwise."""
        if self.mode != "auto" or self.run or self.pairs == 0:
            return None
        return (
            f"intruder dimensions skipped: they need full SVDs of W0 and W0 + ΔW for "
            f"{self.pairs} (module, checkpoint) pairs, estimated "
            f"{_duration(self.estimated_seconds)} at 2 threads (default limit "
            f"{INTRUDER_AUTO_SECONDS:g} s); pass --intruders to compute them"
        )


def plan_intruders(mode: IntruderMode, shapes: Iterable[tuple[int, int]]) -> IntruderPlan:
    """Decide whether intruder dimensions run, from the (out, in) shape of every (module,
    checkpoint) pair that has a base weight.

    ``auto``: run when INTRUDER_SECONDS_PER_UNIT · Σ N·n² ≤ INTRUDER_AUTO_SECONDS.

    Raises:
        ValueError: ``mode`` is not one of ``INTRUDER_MODES``.
    """
    if mode not in INTRUDER_MODES:
        raise ValueError(f"intruders must be one of {', '.join(INTRUDER_MODES)}, got {mode!r}")
    shapes = list(shapes)
    seconds = INTRUDER_SECONDS_PER_UNIT * sum(intruder_work(s) for s in shapes)
    run = mode == "always" or (mode == "auto" and seconds <= INTRUDER_AUTO_SECONDS)
    return IntruderPlan(mode=mode, run=run and bool(shapes), pairs=len(shapes),
                        estimated_seconds=seconds)  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
