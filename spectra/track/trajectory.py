"""Trajectories: how the update develops across the checkpoints of one training run.

:func:`trajectory` takes an HF Trainer output folder (its ``checkpoint-<step>/`` folders, in
step order; each holds an adapter or a full model) or checkpoints listed in order, and gives

* per checkpoint, the rows of :func:`spectra.analysis.analyze` (the same numbers ``spectra
  compare`` prints for that checkpoint), each with its ``step``;
* per module and side (left: output side, right: input side), φ(k, k) between consecutive
  checkpoints (``relation="consecutive"``) and between every checkpoint and the last
  (``relation="last"``): how far the top-k subspace still moves. φ(k, k) =
  ‖U_aᵀ U_b‖_F² / k ∈ [0, 1] (:func:`spectra.engine.subspace.phi_grid`), U the top-k singular
  vectors, k = min(top_k, the numerical rank of both updates).

The singular vectors are computed in a second pass, one module at a time, keeping only the
previous and the last checkpoint's vectors: one more SVD per module and checkpoint (cheap for
factored updates; for dense full-model checkpoints it doubles the time).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypedDict

import torch

from spectra.analysis import AnalysisOptions, Progress, analyze_inputs, open_inputs
from spectra.analysis_module import Input, module_layer
from spectra.engine.device import resolve_device
from spectra.engine.metrics import energy_rank, rank_tolerance
from spectra.engine.subspace import phi_grid
from spectra.engine.svd import spectrum
from spectra.errors import FileFormatError, OptionError
from spectra.inputs import AnalysisInputs, default_labels
from spectra.loaders import LoadOptions
from spectra.parallel import Executor
from spectra.result_types import InputInfo, ModuleRow, Result
from spectra.summary import summarize

_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
# files that make a checkpoint folder readable as a folder (PEFT adapter, HF model)
_FOLDER_MARKERS = (
    "adapter_config.json",
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
Relation = Literal["consecutive", "last"]
# a trajectory compares the checkpoints of one run with each other, not with the base
TRAJECTORY_OPTIONS = AnalysisOptions(against_base=False, similarity=False)


@dataclass(frozen=True)
class Point:
    """One checkpoint of a run.

    Attributes:
        step: The training step (from a ``checkpoint-<step>`` folder name), or the position
            1..n when no name carries one.
        path: The checkpoint.
        label: Its unique label in the analysis (``checkpoint-<step>``, or from the file name).
    """

    step: int
    path: Path
    label: str


class PhiRow(TypedDict):
    """φ(k, k) of one module and side between two checkpoints (``a`` before ``b``)."""

    module: str
    module_type: str
    layer: int | None
    side: str
    relation: Relation
    step_a: int
    step_b: int
    k: int
    phi: float


class Trajectory(TypedDict):
    """What :func:`trajectory` returns (JSON-able).

    Keys: ``spectra_version``, ``settings``, ``base`` as in an analysis result;
    ``checkpoints``: [{step, label, path, kind}] in order; ``modules``: the analysis rows,
    each with its ``step`` and ``k90`` (k at 90 % of the energy); ``phi``: :class:`PhiRow`s;
    ``skipped``: the analysis' skipped tensors per checkpoint.
    """

    spectra_version: str
    settings: dict[str, Any]
    base: Any
    checkpoints: list[dict[str, Any]]
    modules: list[dict[str, Any]]
    phi: list[PhiRow]
    skipped: dict[str, Any]


def find_points(paths: str | Path | Sequence[str | Path]) -> list[Point]:
    """The checkpoints of a run, in order.

    One folder holding ``checkpoint-<step>/`` folders (an HF Trainer ``output_dir``): those, by
    step (a folder with no adapter or model files but one ``*.safetensors`` file: that file). Otherwise the paths as given, in that order; the step is taken from a
    ``checkpoint-<step>`` component of the path, else the position 1..n.

    Raises:
        FileFormatError: A path does not exist.
        OptionError: Nothing given, or steps not increasing.
    """
    given = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not given:
        raise OptionError("give a run folder (with checkpoint-*/ inside) or checkpoints in order")
    for p in given:
        if not p.exists():
            raise FileFormatError("no such file or folder", path=p)
    if len(given) == 1 and given[0].is_dir():
        found = sorted(
            (int(m.group(1)), d)
            for d in given[0].iterdir()
            if d.is_dir() and (m := _CHECKPOINT_DIR.match(d.name))
        )
        if found:
            return [Point(step, _weights_in(d), d.name) for step, d in found]
    steps = [_step_of(p) for p in given]
    if any(s is None for s in steps):
        steps = list(range(1, len(given) + 1))
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):  # type: ignore[operator]
        raise OptionError(
            f"checkpoint steps {steps} are not increasing: list the checkpoints in training order"
        )
    labels = default_labels(given)
    return [Point(int(s), p, lab) for s, p, lab in zip(steps, given, labels, strict=True)]  # type: ignore[arg-type]


def _weights_in(folder: Path) -> Path:
    """What to open in one ``checkpoint-<step>/`` folder: the folder itself (a PEFT adapter, an
    HF model), or the one ``*.safetensors`` file of a folder that holds neither (e.g. the
    demo recipe's ``multilora.safetensors``)."""
    if any((folder / name).exists() for name in _FOLDER_MARKERS):
        return folder
    files = sorted(folder.glob("*.safetensors"))
    return files[0] if len(files) == 1 else folder


def _step_of(path: Path) -> int | None:
    for part in reversed(path.parts):
        m = _CHECKPOINT_DIR.match(part)
        if m:
            return int(m.group(1))
    return None


def trajectory(
    paths: str | Path | Sequence[str | Path],
    *,
    base: str | Path | None = None,
    options: AnalysisOptions = TRAJECTORY_OPTIONS,
    load: LoadOptions | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> Trajectory:
    """Metrics per checkpoint and φ(k, k) between consecutive checkpoints and against the last.

    Args:
        paths: A run folder (``checkpoint-*/`` inside) or the checkpoints in training order.
        base: The base model (needed for full-model checkpoints).
        options: Analysis settings; ``top_k`` is k's upper bound. ``similarity`` is not used
            (the φ this needs is computed here, for the pairs it needs only).
        load: How files become ΔW (α for LoRA files without it, ...).
        progress: Called as ``progress(done, total, module)`` (analysis, then φ pass).
        executor: Where the analysis runs (:func:`spectra.parallel.make_executor`).

    Returns:
        The :class:`Trajectory`.
    """
    points = find_points(paths)
    inputs = AnalysisInputs.of(
        base, [p.path for p in points], labels=[p.label for p in points], load=load
    )
    options = replace(options, similarity=False)
    result = analyze_inputs(inputs, options, progress=progress, executor=executor)
    step_of = {p.label: p.step for p in points}
    modules = [_with_step(row, step_of[row["label"]]) for row in result["modules"]]
    names = sorted({row["module"] for row in modules})
    _, opened = open_inputs(inputs, options)
    phi = _phi_rows(opened, names, step_of, options, progress)
    kinds = {i["label"]: i["kind"] for i in result["inputs"]}
    return Trajectory(
        spectra_version=result["spectra_version"],
        settings=dict(result["settings"]),
        base=result["base"],
        checkpoints=[
            {"step": p.step, "label": p.label, "path": str(p.path), "kind": kinds[p.label]}
            for p in points
        ],
        modules=modules,
        phi=phi,
        skipped=dict(result["skipped"]),
    )


def _with_step(row: ModuleRow, step: int) -> dict[str, Any]:
    values = torch.tensor(row["singular_values"], dtype=torch.float64)
    k90 = energy_rank(values, 0.9) if values.numel() else 0
    return {**row, "step": step, "k90": k90 or None}


# (U: (out, k), V: (in, k)) of one checkpoint's update: its top-k singular vectors
_Vectors = tuple[torch.Tensor, torch.Tensor] | None


def _phi_rows(
    opened: list[Input],
    modules: list[str],
    step_of: dict[str, int],
    options: AnalysisOptions,
    progress: Progress | None,
) -> list[PhiRow]:
    device = resolve_device(options.device)
    rows: list[PhiRow] = []
    modules_of = {inp.label: {m.module for m in inp.reader.modules()} for inp in opened}
    for done, module in enumerate(modules, start=1):
        present = [inp for inp in opened if module in modules_of[inp.label]]
        rows += _module_phi(module, present, step_of, options.top_k, device)
        if progress is not None:
            progress(done, len(modules), module)
    return rows


def _module_phi(
    module: str, present: list[Input], step_of: dict[str, int], top_k: int, device: torch.device
) -> list[PhiRow]:
    """φ rows of one module: each checkpoint against the one before and against the last.
    Only the previous and the last checkpoint's vectors are held."""
    if len(present) < 2:
        return []
    *earlier, final = present
    last = _vectors(final, module, top_k, device)
    rows: list[PhiRow] = []
    prev: tuple[int, _Vectors] | None = None
    for inp in earlier:
        cur = (step_of[inp.label], _vectors(inp, module, top_k, device))
        if prev is not None:
            rows += _pair(module, prev, cur, "consecutive")
        rows += _pair(module, cur, (step_of[final.label], last), "last")
        prev = cur
    assert prev is not None
    rows += _pair(module, prev, (step_of[final.label], last), "consecutive")
    return rows


def _vectors(inp: Input, module: str, top_k: int, device: torch.device) -> _Vectors:
    """Top singular vectors spanning ΔW's range (σ above the numerical-rank tolerance), at most
    ``top_k``; None for a non-finite or zero update."""
    update = inp.reader.update(module)
    try:
        spec = spectrum(update, vectors=top_k, device=device)
    except torch.linalg.LinAlgError:
        return None
    values = spec.values
    if values.numel() == 0 or not spec.finite or float(values[0]) == 0.0:
        return None
    tol = rank_tolerance(float(values[0]), update.shape, torch.finfo(values.dtype).eps)
    k = min(int((values > tol).sum()), top_k)
    assert spec.U is not None and spec.V is not None
    return spec.U[:, :k], spec.V[:, :k]


def _pair(
    module: str, a_at: tuple[int, _Vectors], b_at: tuple[int, _Vectors], relation: Relation
) -> list[PhiRow]:
    """φ(k, k) on both sides between checkpoint a and b, given as (step, vectors)."""
    (step_a, a), (step_b, b) = a_at, b_at
    if a is None or b is None:
        return []
    layer, mtype = module_layer(module)
    rows: list[PhiRow] = []
    for side, ua, ub in (("left", a[0], b[0]), ("right", a[1], b[1])):
        k = min(ua.shape[1], ub.shape[1])
        if k < 1 or ua.shape[0] != ub.shape[0]:
            continue
        grid = phi_grid(ua[:, :k], ub[:, :k])  # (k, k): entry [k-1, k-1] = φ(k, k)
        rows.append(
            PhiRow(
                module=module,
                module_type=mtype,
                layer=layer,
                side=side,
                relation=relation,
                step_a=step_a,
                step_b=step_b,
                k=k,
                phi=float(grid[k - 1, k - 1]),
            )  # fmt: skip
        )
    return rows


def result_of(traj: Trajectory) -> Result:
    """The trajectory as an analysis result, one input per checkpoint (without φ), for what
    reads results: ``spectra.diagnose``, the figures, the report."""
    rows: list[ModuleRow] = [
        {k: v for k, v in row.items() if k not in ("step", "k90")}  # type: ignore[misc]
        for row in traj["modules"]
    ]
    inputs = [
        InputInfo(label=c["label"], path=c["path"], kind=c["kind"], config={})
        for c in traj["checkpoints"]
    ]
    return Result(
        spectra_version=traj["spectra_version"],
        settings=traj["settings"],  # type: ignore[typeddict-item]
        base=traj["base"],
        inputs=inputs,
        modules=rows,
        similarity=[],
        summary=summarize(
            inputs_meta=[(i["label"], i["kind"]) for i in inputs], modules=rows, similarity=[]
        ),
        skipped=traj["skipped"],
    )
