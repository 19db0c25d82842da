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

φ is read from the analysis' own similarity rows (similarity on), so each update has one SVD
that serves both its metrics and φ.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypedDict

from spectra.analysis import AnalysisOptions, Progress, analyze_inputs
from spectra.analysis_module import module_layer
from spectra.errors import FileFormatError, OptionError
from spectra.inputs import AnalysisInputs, default_labels
from spectra.loaders import LoadOptions
from spectra.parallel import Executor
from spectra.result_types import InputInfo, ModuleRow, Result, SimilarityRow
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
    step (a folder with no adapter or model files but one ``*.safetensors`` file: that file).
    Otherwise the paths as given, in that order; the step is taken from a ``checkpoint-<step>``
    component of the path, else the position 1..n.

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
        options: Analysis settings; ``top_k`` is k's upper bound. ``similarity`` is always
            on: φ comes from the analysis' own similarity rows (one SVD per update).
        load: How files become ΔW (α for LoRA files without it, ...).
        progress: Called as ``progress(done, total, module)`` after each module.
        executor: Where the analysis runs (:func:`spectra.parallel.make_executor`).

    Returns:
        The :class:`Trajectory`.
    """
    points = find_points(paths)
    inputs = AnalysisInputs.of(
        base, [p.path for p in points], labels=[p.label for p in points], load=load
    )
    options = replace(options, similarity=True)
    result = analyze_inputs(inputs, options, progress=progress, executor=executor)
    step_of = {p.label: p.step for p in points}
    modules = [_with_step(row, step_of[row["label"]]) for row in result["modules"]]
    phi = _phi_rows(result["similarity"], [p.label for p in points], step_of)
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
    metrics = row.get("metrics") or {}
    return {**row, "step": step, "k90": metrics.get("k90") or None}


def _phi_rows(
    similarity: list[SimilarityRow], labels: list[str], step_of: dict[str, int]
) -> list[PhiRow]:
    """φ(k, k) of each checkpoint against the one before ("consecutive") and against the last
    ("last"), both sides, read from the analysis' similarity rows (a listed before b)."""
    last = labels[-1]
    wanted: dict[tuple[str, str], list[Relation]] = {}
    for a, b in zip(labels, labels[1:], strict=False):
        wanted.setdefault((a, b), []).append("consecutive")
    for a in labels[:-1]:
        wanted.setdefault((a, last), []).append("last")
    rows: list[PhiRow] = []
    for sim in similarity:
        for relation in wanted.get((sim["a"], sim["b"]), []):
            if not sim["phi"]:
                continue
            layer, mtype = module_layer(sim["module"])
            rows.append(
                PhiRow(
                    module=sim["module"],
                    module_type=mtype,
                    layer=layer,
                    side=sim["side"],
                    relation=relation,
                    step_a=step_of[sim["a"]],
                    step_b=step_of[sim["b"]],
                    k=len(sim["phi"]),
                    phi=float(sim["phi"][-1][-1]),
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
