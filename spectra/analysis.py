"""Compare the updates of several checkpoints against one base: the data behind every
table, figure and verdict spectra produces.

:func:`analyze` opens every checkpoint (headers only), picks the modules, and hands each module
to an executor (:mod:`spectra.parallel`: this process, a process pool, or a Dask cluster);
:func:`spectra.analysis_module.analyze_module` computes that module's rows: for every
checkpoint the exact spectrum and the dominance metrics, the similarity of every pair of
methods' top-k singular subspaces, and, with the base weight at hand, the amplification factor
and intruder dimensions. Modules are processed one at a time per worker and every ΔW is
released after use, so memory does not grow with the number of modules. The result is a
JSON-able dict (schema in the README, section "JSON output"), which is also what
``spectra compare --json`` writes and what the plotters, the report and ``diagnose`` read; it
is the same, byte for byte once dumped, whichever executor ran it (at equal thread counts per
SVD: LAPACK's results can depend on its thread count in the last bits).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import spectra
from spectra.analysis_module import (
    Input,
    ModuleContext,
    Rows,
    analyze_module,
    jsonable,
    module_cost,
    module_layer,
)
from spectra.engine.device import resolve_device
from spectra.engine.randomized import DEFAULT_OVERSAMPLE, DEFAULT_POWER_ITERS
from spectra.errors import OptionError
from spectra.io.source import TensorSource
from spectra.loaders import LoadOptions, open_checkpoint, open_tensors
from spectra.loaders.base import CheckpointReader
from spectra.loaders.stream import release_staging
from spectra.parallel import Executor
from spectra.update import Kind

Progress = Callable[[int, int, str], None]
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_SVD_METHODS = ("exact", "randomized")

# the public names of this module (module_layer is re-exported from analysis_module)
__all__ = [
    "AnalysisOptions",
    "Progress",
    "analyze",
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
        dtype: ``"float32"`` (default) or ``"float64"``; every operand is widened to it first.
        device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"`` (refused when not present).
        against_base: Compute the amplification factor and intruder dimensions against W0
            (needs the base weights; costs two full SVDs of the weight per module).
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
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    against_base: bool = True
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
        if self.dtype not in _DTYPES:
            raise OptionError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        if self.modules is not None:
            try:
                re.compile(self.modules)
            except re.error as e:
                raise OptionError(f"--modules {self.modules!r} is not a valid regex: {e}") from e
        if not 0.0 < self.intruder_eps < 1.0:
            raise OptionError(f"--intruder-eps must be in (0, 1), got {self.intruder_eps}")
        if self.intruder_k < 1:
            raise OptionError(f"--intruder-k must be at least 1, got {self.intruder_k}")
        if self.svd not in _SVD_METHODS:
            raise OptionError(f"--svd must be exact or randomized, got {self.svd!r}")
        if self.oversample < 0 or self.power_iters < 0:
            raise OptionError(
                f"--oversample and --power-iters must be >= 0, got {self.oversample}, "
                f"{self.power_iters}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


def default_labels(paths: Sequence[str | Path]) -> list[str]:
    """Labels from file names (``lora/`` → ``lora``, ``full.safetensors`` → ``full``), made
    unique by appending ``-2``, ``-3``, ..."""
    labels: list[str] = []
    for p in paths:
        p = Path(p)
        stem = p.name if p.is_dir() else p.stem
        if stem in ("adapter_model", "adapter_config", "model", "pytorch_model"):
            stem = p.parent.name or stem
        label, i = stem, 2
        while label in labels:
            label, i = f"{stem}-{i}", i + 1
        labels.append(label)
    return labels


def open_inputs(
    base: str | Path | None,
    checkpoints: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    kinds: Sequence[Kind | None] | None = None,
    options: AnalysisOptions = AnalysisOptions(),
    lora_alpha: float | None = None,
    lora_scale: float | None = None,
) -> tuple[TensorSource | None, list[Input]]:
    """Open the base and every checkpoint (kind detected unless given). Nothing is computed."""
    if labels is not None and len(labels) != len(checkpoints):
        raise OptionError(
            f"got {len(labels)} --label for {len(checkpoints)} checkpoints: give one per CKPT, in order"
        )
    labels = list(labels) if labels is not None else default_labels(checkpoints)
    if len(set(labels)) != len(labels):
        raise OptionError(f"labels must be unique, got {labels}")
    kinds = list(kinds) if kinds is not None else [None] * len(checkpoints)
    base_src = open_tensors(base) if base is not None else None
    inputs = []
    for label, path, kind in zip(labels, checkpoints, kinds, strict=True):
        load = LoadOptions(
            dtype=options.torch_dtype, kind=kind, lora_alpha=lora_alpha, lora_scale=lora_scale
        )
        reader = open_checkpoint(path, base=base_src, options=load)
        inputs.append(Input(label=label, path=Path(path), reader=reader))
    return base_src, inputs


@dataclass(frozen=True)
class _Plan:
    """What a worker needs to open the inputs itself (picklable; readers are not)."""

    base: str | None
    checkpoints: tuple[str, ...]
    labels: tuple[str, ...]
    kinds: tuple[Kind | None, ...]
    options: AnalysisOptions
    lora_alpha: float | None
    lora_scale: float | None

    def open(self) -> ModuleContext:
        return _open_context(
            self.base,
            self.checkpoints,
            labels=self.labels,
            kinds=self.kinds,
            options=self.options,
            lora_alpha=self.lora_alpha,
            lora_scale=self.lora_scale,
        )


def _open_context(
    base: str | Path | None,
    checkpoints: Sequence[str | Path],
    *,
    labels: Sequence[str] | None,
    kinds: Sequence[Kind | None] | None,
    options: AnalysisOptions,
    lora_alpha: float | None,
    lora_scale: float | None,
) -> ModuleContext:
    base_src, inputs = open_inputs(
        base,
        checkpoints,
        labels=labels,
        kinds=kinds,
        options=options,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
    )
    return ModuleContext(
        options=options,
        device=resolve_device(options.device),
        base=base_src,
        inputs=inputs,
        modules_of={i.label: {m.module for m in i.reader.modules()} for i in inputs},
    )


@dataclass(frozen=True)
class _ModuleTask:
    plan: _Plan
    module: str


# In a worker process (or Dask worker thread): the inputs of the latest plan, opened once.
_worker = threading.local()


def _run_task(task: _ModuleTask) -> tuple[Rows, Rows]:
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
    lora_alpha: float | None = None,
    lora_scale: float | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Spectra, metrics and pairwise subspace similarity of every module of every checkpoint.

    Args:
        base: Base checkpoint (needed for full fine-tunes and for base-relative metrics).
        checkpoints: Full fine-tuned checkpoints, LoRA adapters or MultiLoRA checkpoints.
        labels: One name per checkpoint (default: from the file names).
        kinds: Per checkpoint, a kind to force instead of detecting it (None = detect).
        options: Analysis settings.
        lora_alpha: α for LoRA files that do not store it.
        lora_scale: Full scaling s for LoRA files that do not store α.
        progress: Called as ``progress(done, total, module)`` after each module.
        executor: Where modules run (:func:`spectra.parallel.make_executor`); None: here, one
            after the other. Other executors get the largest modules first and reopen the
            files in each worker; the result is the same.

    Returns:
        The result dict (README, "JSON output"); JSON-serialisable, NaN written as None.
    """
    ctx = _open_context(
        base,
        checkpoints,
        labels=labels,
        kinds=kinds,
        options=options,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
    )
    # workers reopen the files: absolute paths, as their working directory may differ
    plan = _Plan(
        base=None if base is None else str(Path(base).absolute()),
        checkpoints=tuple(str(Path(c).absolute()) for c in checkpoints),
        labels=tuple(i.label for i in ctx.inputs),
        kinds=tuple(i.reader.kind for i in ctx.inputs),  # as detected here: no second guess
        options=options,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
    )
    modules = _select_modules(ctx)
    try:
        per_module = _run_modules(ctx, plan, modules, executor, progress)
    finally:
        release_staging()
    module_rows = [row for rows, _ in per_module for row in rows]
    similarity_rows = [row for _, sims in per_module for row in sims]
    return {
        "spectra_version": spectra.__version__,
        "settings": _settings(
            options, ctx.device, against_base=options.against_base and ctx.base is not None
        ),
        "base": None if base is None else {"path": str(base)},
        "inputs": [
            {
                "label": i.label,
                "path": str(i.path),
                "kind": i.reader.kind,
                "config": jsonable(i.reader.config),
            }
            for i in ctx.inputs
        ],
        "modules": module_rows,
        "similarity": similarity_rows,
        "summary": summarize(
            inputs_meta=[(i.label, i.reader.kind) for i in ctx.inputs],
            modules=module_rows,
            similarity=similarity_rows,
        ),
        "skipped": {i.label: _report_dict(i.reader) for i in ctx.inputs},
    }


def _select_modules(ctx: ModuleContext) -> list[str]:
    """Every module of any checkpoint, sorted, filtered by ``options.modules``."""
    all_modules = sorted(set().union(*ctx.modules_of.values()))
    regex = ctx.options.modules
    if regex:
        pattern = re.compile(regex)
        all_modules = [m for m in all_modules if pattern.search(m)]
    if not all_modules:
        raise OptionError(_no_modules_message(ctx.inputs, regex))
    return all_modules


def _run_modules(
    ctx: ModuleContext,
    plan: _Plan,
    modules: list[str],
    executor: Executor | None,
    progress: Progress | None,
) -> list[tuple[Rows, Rows]]:
    """Each module's (rows, similarity rows), in ``modules`` order, whoever computed them."""
    total = len(modules)
    results: list[tuple[Rows, Rows] | None] = [None] * total
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


def _settings(
    options: AnalysisOptions, device: torch.device, *, against_base: bool
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "dtype": options.dtype,
        "device": str(device),
        "top_k": options.top_k,
        "modules": options.modules,
        "against_base": against_base,
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


def _no_modules_message(inputs: list[Input], regex: str | None) -> str:
    names = sorted({m.module for i in inputs for m in i.reader.modules()})
    sample = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    if regex:
        return f"--modules {regex!r} matches none of the {len(names)} modules (e.g. {sample})"
    paths = ", ".join(str(i.path) for i in inputs)
    return f"no adapted 2-D weights found in {paths}"


def summarize(
    *,
    inputs_meta: list[tuple[str, str]],
    modules: list[dict[str, Any]],
    similarity: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Per method: module count, mean top-1 energy share / effective rank / stable rank over
    modules with finite, nonzero ΔW, and mean φ(k, k) against each other method per side."""
    out = []
    for label, kind in inputs_meta:
        rows = [m for m in modules if m["label"] == label]
        ok = [m for m in rows if not m["nonfinite"] and m["metrics"]]
        phis: dict[str, dict[str, float | None]] = {}
        for other, _ in inputs_meta:
            if other == label:
                continue
            phis[other] = {
                side: _mean(
                    [
                        s["phi"][-1][-1]
                        for s in similarity
                        if s["side"] == side and {s["a"], s["b"]} == {label, other}
                    ]
                )
                for side in ("left", "right")
            }
        out.append(
            {
                "label": label,
                "kind": kind,
                "modules": len(rows),
                "mean_top1_energy": _mean([m["metrics"].get("top1_energy") for m in ok]),
                "mean_effective_rank": _mean([m["metrics"].get("effective_rank") for m in ok]),
                "mean_stable_rank": _mean([m["metrics"].get("stable_rank") for m in ok]),
                "mean_phi": phis,
                "nonfinite_modules": sum(1 for m in rows if m["nonfinite"]),
            }
        )
    return out


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def _report_dict(reader: CheckpointReader) -> dict[str, Any]:
    r = reader.report
    return {
        "skipped_1d": len(r.skipped_1d),
        "only_in_base": list(r.only_in_base),
        "only_in_tuned": list(r.only_in_tuned),
        "notes": list(r.notes),
    }
