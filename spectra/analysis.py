"""Compare the updates of several checkpoints against one base: the data behind every
table, figure and verdict spectra produces.

:func:`analyze` opens every checkpoint (headers only), picks the modules, and hands each module
to an executor (:mod:`spectra.parallel`: this process, a process pool, or a Dask cluster);
:func:`spectra.analysis_module.analyze_module` computes that module's rows: for every
checkpoint the exact spectrum and the dominance metrics, the similarity of every pair of
methods' top-k singular subspaces, and, with the base weight at hand, the amplification factor
and intruder dimensions. Modules are processed one at a time per worker and every ΔW is
released after use, so memory does not grow with the number of modules. The result is a
JSON-able dict (defined in :mod:`spectra.result_types`, reference page docs/json.md), which
is also what ``spectra compare --json`` writes and what the plotters, the report and ``diagnose`` read; it
is the same, byte for byte once dumped, whichever executor ran it (at equal thread counts per
SVD: LAPACK's results can depend on its thread count in the last bits).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

import spectra
from spectra.analysis_module import (
    Input,
    ModuleContext,
    Rows,
    SimilarityRows,
    analyze_module,
    jsonable,
    module_cost,
    module_layer,
)
from spectra.engine.device import compute_dtype_named, resolve_device
from spectra.engine.intruder_policy import (
    INTRUDER_MODES,
    IntruderMode,
    IntruderPlan,
    plan_intruders,
)
from spectra.engine.randomized import DEFAULT_OVERSAMPLE, DEFAULT_POWER_ITERS
from spectra.errors import OptionError
from spectra.inputs import AnalysisInputs, default_labels, open_selected
from spectra.io.source import TensorSource
from spectra.io.stream import release_staging
from spectra.layout import natural_key
from spectra.loaders import open_tensors
from spectra.loaders.base import CheckpointReader
from spectra.parallel import Executor
from spectra.result_types import BaseRef, InputInfo, Result, Settings, Skipped
from spectra.results import AnalysisResult
from spectra.summary import summarize
from spectra.update import Kind

Progress = Callable[[int, int, str], None]
_SVD_METHODS = ("exact", "randomized")
# median ‖ΔW‖_F / ‖W0‖_F at or above which a "fine-tune" looks like a separately trained model:
# unrelated weights of equal size differ by about √2 · ‖W0‖_F, fine-tunes by a small fraction.
UNRELATED_THRESHOLD = 0.5

# the public names of this module (module_layer is re-exported from analysis_module,
# AnalysisInputs and default_labels from spectra.inputs)
__all__ = [
    "AnalysisInputs",
    "AnalysisOptions",
    "Progress",
    "analyze",
    "analyze_inputs",
    "default_labels",
    "module_layer",
    "open_inputs",
    "summarize",
]


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of one analysis run (all recorded in the result's ``settings``).

    Attributes:
        top_k: Size of the singular subspaces compared by φ(i, j), i, j ≤ top_k. Per pair the
            grid is cut to the number of singular vectors both updates have (k in the output).
            With ``svd="randomized"`` also the number of singular values computed.
        modules: Regular expression; only module paths it matches (``re.search``) are analysed.
        exclude: Regular expression; module paths it matches (``re.search``) are left out,
            after ``modules`` has chosen (e.g. a resized embedding: ``exclude="embed"``).
        dtype: ``"float32"`` (default) or ``"float64"``; every operand is widened to it first.
        device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"`` (refused when not present).
        against_base: Compute the measures against W0 (needs the base weights): relative
            norms and amplification factor (a few passes over W0), and intruder dimensions
            as ``intruders`` says.
        intruders: ``"auto"`` (default): intruder dimensions only when their two full SVDs per
            module are estimated cheap (:mod:`spectra.engine.intruder_policy`); ``"always"``;
            ``"never"``.
        cache: Read and store W0's left singular vectors in the user's cache folder
            (:mod:`spectra.engine.cache`) so that later runs against the same base skip them.
        unrelated_threshold: Warn that base and checkpoint look like separately trained models
            when the median over modules of ‖ΔW‖_F / ‖W0‖_F is at least this.
        intruder_k: How many top singular vectors of W0 + ΔW are tested for intrusion.
        intruder_eps: A vector is an intruder when its max |cos| with W0's left singular
            vectors is below this.
        similarity: Compare the top-k singular subspaces of every pair of checkpoints (φ,
            principal angles). Without it no singular vectors are computed for the spectra:
            singular values only, the fastest exact route.
        svd: ``"exact"`` (default): every singular value, LAPACK. ``"randomized"``: dense
            updates get their top ``top_k`` values and vectors by randomized subspace iteration
            (approximate; see :mod:`spectra.engine.randomized`); factored ones stay exact.
        oversample: p of the randomized SVD (extra random columns).
        power_iters: q of the randomized SVD (power iterations).
        seed: Seed of the randomized SVD's test matrix.
    """

    top_k: int = 16
    modules: str | None = None
    exclude: str | None = None
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    against_base: bool = True
    intruders: IntruderMode = "auto"
    cache: bool = True
    unrelated_threshold: float = UNRELATED_THRESHOLD
    intruder_k: int = 10
    intruder_eps: float = 0.5
    similarity: bool = True
    svd: Literal["exact", "randomized"] = "exact"
    oversample: int = DEFAULT_OVERSAMPLE
    power_iters: int = DEFAULT_POWER_ITERS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise OptionError(f"--top-k must be at least 1, got {self.top_k}")
        compute_dtype_named(self.dtype)
        for flag, regex in (("--modules", self.modules), ("--exclude", self.exclude)):
            if regex is not None:
                try:
                    re.compile(regex)
                except re.error as e:
                    raise OptionError(f"{flag} {regex!r} is not a valid regex: {e}") from e
        if not 0.0 < self.intruder_eps < 1.0:
            raise OptionError(f"--intruder-eps must be in (0, 1), got {self.intruder_eps}")
        if self.intruder_k < 1:
            raise OptionError(f"--intruder-k must be at least 1, got {self.intruder_k}")
        if self.intruders not in INTRUDER_MODES:
            raise OptionError(
                f"intruders must be one of {', '.join(INTRUDER_MODES)}, got {self.intruders!r}"
            )
        if not (self.unrelated_threshold > 0.0 and math.isfinite(self.unrelated_threshold)):
            raise OptionError(
                f"--unrelated-threshold must be a positive number, got {self.unrelated_threshold}"
            )
        if self.svd not in _SVD_METHODS:
            raise OptionError(f"--svd must be exact or randomized, got {self.svd!r}")
        if self.oversample < 0 or self.power_iters < 0:
            raise OptionError(
                f"--oversample and --power-iters must be >= 0, got {self.oversample}, "
                f"{self.power_iters}"
            )

    def selects(self, module: str) -> bool:
        """Whether ``module`` is analysed: ``modules`` finds it (or is None) and ``exclude``
        does not (``re.search``)."""
        if self.modules is not None and not re.search(self.modules, module):
            return False
        return self.exclude is None or not re.search(self.exclude, module)

    @property
    def torch_dtype(self) -> torch.dtype:
        return compute_dtype_named(self.dtype)


def open_inputs(
    inputs: AnalysisInputs, options: AnalysisOptions = AnalysisOptions()
) -> tuple[TensorSource | None, list[Input]]:
    """Open the base and every checkpoint of ``inputs`` (kind detected unless forced), reading
    in ``options.dtype``. Nothing is computed."""
    base_src = open_tensors(inputs.base) if inputs.base is not None else None
    filtered = options.modules is not None or options.exclude is not None
    selects = options.selects if filtered else None
    opened = []
    for i, (label, path) in enumerate(zip(inputs.labels, inputs.checkpoints, strict=True)):
        load = inputs.load_options(i, options.torch_dtype)
        reader = open_selected(path, base=base_src, load=load, selects=selects)
        opened.append(Input(label=label, path=path, reader=reader))
    return base_src, opened


@dataclass(frozen=True)
class _Plan:
    """What a worker needs to open the inputs itself (picklable; readers are not)."""

    inputs: AnalysisInputs
    options: AnalysisOptions

    def open(self) -> ModuleContext:
        return _open_context(self.inputs, self.options)


def _open_context(inputs: AnalysisInputs, options: AnalysisOptions) -> ModuleContext:
    base_src, opened = open_inputs(inputs, options)
    return ModuleContext(
        options=options,
        device=resolve_device(options.device),
        base=base_src,
        inputs=opened,
        modules_of={i.label: {m.module for m in i.reader.modules()} for i in opened},
    )


@dataclass(frozen=True)
class _ModuleTask:
    plan: _Plan
    module: str


# In a worker process (or Dask worker thread): the inputs of the latest plan, opened once.
_worker = threading.local()


def _run_task(task: _ModuleTask) -> tuple[Rows, SimilarityRows]:
    """The executor's work function: open the plan's inputs once per worker, do one module."""
    cached = getattr(_worker, "opened", None)
    if cached is None or cached[0] != task.plan:
        _worker.opened = None  # close the previous plan's files first
        _worker.opened = (task.plan, task.plan.open())
    return analyze_module(_worker.opened[1], task.module)


def analyze(
    base: str | Path | None,
    checkpoints: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    kinds: Sequence[Kind | None] | None = None,
    options: AnalysisOptions = AnalysisOptions(),
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> AnalysisResult:
    """:func:`analyze_inputs` of ``AnalysisInputs.of(base, checkpoints, labels, kinds)``: the
    short form for files that need no load settings (α for LoRA files without it and the like
    go in :class:`~spectra.inputs.AnalysisInputs`' ``load``)."""
    inputs = AnalysisInputs.of(base, checkpoints, labels=labels, kinds=kinds)
    return analyze_inputs(inputs, options, progress=progress, executor=executor)


def analyze_inputs(
    inputs: AnalysisInputs,
    options: AnalysisOptions = AnalysisOptions(),
    *,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> AnalysisResult:
    """Spectra, metrics and pairwise subspace similarity of every module of every checkpoint.

    Args:
        inputs: What to analyse: base (or None for adapters alone), checkpoints, labels,
            forced kinds and load settings.
        options: How to analyse them.
        progress: Called as ``progress(done, total, module)`` after each module.
        executor: Where modules run (:func:`spectra.parallel.make_executor`); None: here, one
            after the other. Other executors get the largest modules first and reopen the
            files in each worker; the result is the same.

    Returns:
        The result, shaped as :class:`spectra.result_types.Result` (reference in
        ``docs/json.md``): a :class:`spectra.results.AnalysisResult`, i.e. a plain dict that a
        notebook shows as its summary table; JSON-serialisable, NaN written as None.
    """
    base = inputs.base
    ctx = _open_context(inputs, options)
    # workers reopen the files: absolute paths (their working directory may differ), and the
    # kinds as detected here: no second guess
    detected = tuple(i.reader.kind for i in ctx.inputs)
    modules = _select_modules(ctx)
    intruders = _intruder_plan(ctx, modules)
    # the workers get the decision, not "auto": one rule for the whole run
    ctx.options = replace(options, intruders="always" if intruders.run else "never")
    plan = _Plan(replace(inputs, kinds=detected).absolute(), ctx.options)
    try:
        per_module = _run_modules(ctx, plan, modules, executor, progress)
    finally:
        release_staging()
    module_rows = [row for rows, _ in per_module for row in rows]
    similarity_rows = [row for _, sims in per_module for row in sims]
    # a dict (JSON byte-identical) that a notebook shows as its summary table
    return AnalysisResult(
        Result(
            spectra_version=spectra.__version__,
            settings=_settings(
                options,
                ctx.device,
                against_base=options.against_base and ctx.base is not None,
                intruders=intruders,
            ),
            base=None if base is None else BaseRef(path=str(base)),
            inputs=[
                InputInfo(
                    label=i.label,
                    path=str(i.path),
                    kind=i.reader.kind,
                    config=jsonable(i.reader.config),
                )
                for i in ctx.inputs
            ],
            modules=module_rows,
            similarity=similarity_rows,
            summary=summarize(
                inputs_meta=[(i.label, i.reader.kind) for i in ctx.inputs],
                modules=module_rows,
                similarity=similarity_rows,
            ),
            skipped={i.label: _report_dict(i.reader) for i in ctx.inputs},
        )
    )


def _select_modules(ctx: ModuleContext) -> list[str]:
    """Every module of any checkpoint, in natural order (block.2 before block.10), kept by
    ``options.modules`` and not dropped by ``options.exclude``."""
    found = set().union(*ctx.modules_of.values())
    all_modules = sorted((m for m in found if ctx.options.selects(m)), key=natural_key)
    regex, exclude = ctx.options.modules, ctx.options.exclude
    if not all_modules:
        raise OptionError(_no_modules_message(ctx.inputs, regex, exclude))
    return all_modules


def _run_modules(
    ctx: ModuleContext,
    plan: _Plan,
    modules: list[str],
    executor: Executor | None,
    progress: Progress | None,
) -> list[tuple[Rows, SimilarityRows]]:
    """Each module's (rows, similarity rows), in ``modules`` order, whoever computed them."""
    total = len(modules)
    results: list[tuple[Rows, SimilarityRows] | None] = [None] * total
    if executor is None or executor.kind == "serial":
        order = list(range(total))
        outputs = (analyze_module(ctx, m) for m in modules)  # the files opened here
    else:
        # largest first, so one big module does not finish last while the others idle
        costs = _module_costs(ctx)
        order = sorted(range(total), key=lambda i: (-costs.get(modules[i], 0), i))
        outputs = executor.map(_run_task, [_ModuleTask(plan, modules[i]) for i in order])
    for done, (i, out) in enumerate(zip(order, outputs, strict=True), start=1):
        results[i] = out
        if progress is not None:
            progress(done, total, modules[i])
    return [r for r in results if r is not None]


def _module_costs(ctx: ModuleContext) -> dict[str, int]:
    """module → summed cost of its spectra over the checkpoints (from shapes, no data)."""
    costs: dict[str, int] = {}
    for inp in ctx.inputs:
        for info in inp.reader.modules():
            costs[info.module] = costs.get(info.module, 0) + module_cost(info.shape, info.rank)
    return costs


def _intruder_plan(ctx: ModuleContext, modules: list[str]) -> IntruderPlan:
    """The run's intruder decision from the shapes of every (module, checkpoint) pair that has
    a base weight (no data read)."""
    chosen = set(modules)
    shapes = []
    if ctx.options.against_base:
        for inp in ctx.inputs:
            for info in inp.reader.modules():
                base_shape = ctx.base_shape(info.module) if info.module in chosen else None
                if base_shape is not None and base_shape == tuple(info.shape):
                    shapes.append(base_shape)
    return plan_intruders(ctx.options.intruders, shapes)


def _settings(
    options: AnalysisOptions,
    device: torch.device,
    *,
    against_base: bool,
    intruders: IntruderPlan,
) -> Settings:
    settings: Settings = {
        "dtype": options.dtype,
        "device": str(device),
        "top_k": options.top_k,
        "modules": options.modules,
        **({"exclude": options.exclude} if options.exclude is not None else {}),
        "against_base": against_base,
        "intruders": options.intruders,
        "intruders_run": intruders.run,
        "intruder_pairs": intruders.pairs,
        "intruder_estimated_seconds": intruders.estimated_seconds,
        "unrelated_threshold": options.unrelated_threshold,
        "intruder_k": options.intruder_k,
        "intruder_eps": options.intruder_eps,
        "similarity": options.similarity,
        "svd": options.svd,
    }
    if options.svd == "randomized":
        settings.update(
            oversample=options.oversample, power_iters=options.power_iters, seed=options.seed
        )
    return settings


def _no_modules_message(inputs: list[Input], regex: str | None, exclude: str | None) -> str:
    names = sorted({m.module for i in inputs for m in i.reader.modules()})
    sample = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    if regex and exclude:
        return (
            f"--modules {regex!r} with --exclude {exclude!r} leaves none of the {len(names)} "
            f"modules (e.g. {sample})"
        )
    if regex:
        return f"--modules {regex!r} matches none of the {len(names)} modules (e.g. {sample})"
    if exclude:
        return f"--exclude {exclude!r} leaves none of the {len(names)} modules (e.g. {sample})"
    paths = ", ".join(str(i.path) for i in inputs)
    return f"no adapted 2-D weights found in {paths}"


def _report_dict(reader: CheckpointReader) -> Skipped:
    r = reader.report
    return Skipped(
        skipped_1d=len(r.skipped_1d),
        only_in_base=list(r.only_in_base),
        only_in_tuned=list(r.only_in_tuned),
        notes=list(r.notes),
    )
