"""Compare the updates of several checkpoints against one base: the data behind every
table, figure and verdict spectra produces.

:func:`analyze` walks the modules one at a time (memory does not grow with their number):
for each module it loads ΔW from every checkpoint, computes the exact spectrum and the
dominance metrics, the similarity of every pair of methods' top-k singular subspaces, and,
with the base weight at hand, the amplification factor and intruder dimensions. The result is
a JSON-able dict (schema in the README, section "JSON output"), which is also what
``spectra compare --json`` writes and what the plotters, the report and ``diagnose`` read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import spectra
from spectra.engine.against_base import (
    DENSE_AMPLIFICATION_RANK,
    amplification_factor,
    intruder_dimensions,
)
from spectra.engine.device import resolve_device
from spectra.engine.metrics import dominance_metrics
from spectra.engine.subspace import grassmann_distance, group_similarity, phi_grid, principal_angles
from spectra.engine.svd import Spectrum, spectrum
from spectra.errors import OptionError
from spectra.io.source import TensorSource
from spectra.loaders import LoadOptions, open_checkpoint, open_tensors
from spectra.loaders.base import CheckpointReader
from spectra.update import Kind, ModuleUpdate

Progress = Callable[[int, int, str], None]
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of one analysis run (all recorded in the result's ``settings``).

    Attributes:
        top_k: Size of the singular subspaces compared by φ(i, j), i, j ≤ top_k. Per pair the
            grid is cut to the number of singular vectors both updates have (k in the output).
        modules: Regular expression; only module paths it matches (``re.search``) are analysed.
        dtype: ``"float32"`` (default) or ``"float64"``; every operand is widened to it first.
        device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"`` (refused when not present).
        against_base: Compute the amplification factor and intruder dimensions against W0
            (needs the base weights; costs two full SVDs of the weight per module).
        intruder_k: How many top singular vectors of W0 + ΔW are tested for intrusion.
        intruder_eps: A vector is an intruder when its max |cos| with W0's left singular
            vectors is below this.
    """

    top_k: int = 16
    modules: str | None = None
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    against_base: bool = True
    intruder_k: int = 10
    intruder_eps: float = 0.5

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

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


@dataclass
class _Input:
    label: str
    path: Path
    reader: CheckpointReader


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


def module_layer(module: str) -> tuple[int | None, str]:
    """Layer index and module type of a module path.

    The layer is the first all-digit path component; the type is the path after it
    (``encoder.layer.3.attention.self.query`` → (3, ``attention.self.query``)); a path with no
    digit component has layer None and is its own type.
    """
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            rest = ".".join(parts[i + 1 :])
            return int(part), rest or module
    return None, module


def open_inputs(
    base: str | Path | None,
    checkpoints: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    kinds: Sequence[Kind | None] | None = None,
    options: AnalysisOptions = AnalysisOptions(),
    lora_alpha: float | None = None,
    lora_scale: float | None = None,
) -> tuple[TensorSource | None, list[_Input]]:
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
        inputs.append(_Input(label=label, path=Path(path), reader=reader))
    return base_src, inputs


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

    Returns:
        The result dict (README, "JSON output"); JSON-serialisable, NaN written as None.
    """
    device = resolve_device(options.device)
    base_src, inputs = open_inputs(
        base,
        checkpoints,
        labels=labels,
        kinds=kinds,
        options=options,
        lora_alpha=lora_alpha,
        lora_scale=lora_scale,
    )
    per_input = {inp.label: {m.module for m in inp.reader.modules()} for inp in inputs}
    pattern = re.compile(options.modules) if options.modules else None
    all_modules = sorted(set().union(*per_input.values()))
    if pattern is not None:
        all_modules = [m for m in all_modules if pattern.search(m)]
    if not all_modules:
        raise OptionError(_no_modules_message(inputs, options.modules))

    module_rows: list[dict[str, Any]] = []
    similarity_rows: list[dict[str, Any]] = []
    for done, module in enumerate(all_modules, start=1):
        present = [inp for inp in inputs if module in per_input[inp.label]]
        w0 = _base_weight(base_src, module, options) if options.against_base else None
        spectra_here: dict[str, Spectrum] = {}
        for inp in present:
            update = inp.reader.update(module)
            row, spec = _analyze_update(update, inp, w0, options, device)
            module_rows.append(row)
            if spec is not None:
                spectra_here[inp.label] = spec
        similarity_rows.extend(_pair_similarity(module, present, spectra_here, options))
        if progress is not None:
            progress(done, len(all_modules), module)

    return {
        "spectra_version": spectra.__version__,
        "settings": {
            "dtype": options.dtype,
            "device": str(device),
            "top_k": options.top_k,
            "modules": options.modules,
            "against_base": options.against_base and base_src is not None,
            "intruder_k": options.intruder_k,
            "intruder_eps": options.intruder_eps,
        },
        "base": None if base is None else {"path": str(base)},
        "inputs": [
            {
                "label": i.label,
                "path": str(i.path),
                "kind": i.reader.kind,
                "config": _jsonable(i.reader.config),
            }
            for i in inputs
        ],
        "modules": module_rows,
        "similarity": similarity_rows,
        "summary": summarize(
            inputs_meta=[(i.label, i.reader.kind) for i in inputs],
            modules=module_rows,
            similarity=similarity_rows,
        ),
        "skipped": {i.label: _report_dict(i.reader) for i in inputs},
    }


def _no_modules_message(inputs: list[_Input], regex: str | None) -> str:
    names = sorted({m.module for i in inputs for m in i.reader.modules()})
    sample = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    if regex:
        return f"--modules {regex!r} matches none of the {len(names)} modules (e.g. {sample})"
    paths = ", ".join(str(i.path) for i in inputs)
    return f"no adapted 2-D weights found in {paths}"


def _base_weight(
    base_src: TensorSource | None, module: str, options: AnalysisOptions
) -> torch.Tensor | None:
    """W0 of a module widened to the compute dtype, or None when the base lacks it."""
    if base_src is None:
        return None
    key = module + ".weight"
    if key not in base_src:
        return None
    w0 = base_src.get(key)
    if w0.ndim < 2:
        return None
    # widen before anything else; conv kernels are flattened like their ΔW: (out, in·kh·kw)
    return w0.to(dtype=options.torch_dtype).reshape(w0.shape[0], -1)


def _analyze_update(
    update: ModuleUpdate,
    inp: _Input,
    w0: torch.Tensor | None,
    options: AnalysisOptions,
    device: torch.device,
) -> tuple[dict[str, Any], Spectrum | None]:
    """One row of ``modules`` and the spectrum (with top-k vectors) kept for similarity."""
    layer, mtype = module_layer(update.module)
    row: dict[str, Any] = {
        "module": update.module,
        "label": inp.label,
        "kind": inp.reader.kind,
        "layer": layer,
        "module_type": mtype,
        "shape": list(update.shape),
        "rank": update.inner_rank,
        "notes": list(update.notes),
    }
    if not _finite(update):
        row.update(
            singular_values=[],
            structural_zeros=0,
            metrics=None,
            base_metrics=None,
            multilora=None,
            nonfinite=True,
        )
        row["notes"].append("ΔW has NaN/Inf entries: left out of every mean and figure")
        return row, None
    spec = spectrum(update, vectors=options.top_k, device=device)
    metrics = dominance_metrics(spec, shape=update.shape)
    row.update(
        singular_values=[float(v) for v in spec.values.tolist()],
        structural_zeros=int(spec.structural_zeros),
        metrics=_jsonable(metrics),
        base_metrics=_base_metrics(update, w0, options, device) if w0 is not None else None,
        multilora=_multilora_block(update) if update.groups else None,
        nonfinite=False,
    )
    if metrics.get("spectral_norm") == 0.0:
        row["notes"].append("ΔW = 0: this module did not change (metrics defined as 0, no φ)")
    return row, spec


def _finite(update: ModuleUpdate) -> bool:
    tensors = [update.dense] if update.dense is not None else [update.left, update.right]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def _base_metrics(
    update: ModuleUpdate, w0: torch.Tensor, options: AnalysisOptions, device: torch.device
) -> dict[str, Any] | None:
    if tuple(w0.shape) != tuple(update.shape):
        return None
    # r: the inner rank of a factored update, 16 for a dense one (the engine's default)
    r = min(update.inner_rank if update.factored else DENSE_AMPLIFICATION_RANK, min(update.shape))
    amp = amplification_factor(update, w0, r, device=device)
    intr = intruder_dimensions(
        w0, update, k=options.intruder_k, eps=options.intruder_eps, device=device
    )
    return _jsonable(
        {
            "amplification": amp,
            "amplification_r": r,
            "intruder_count": intr.count,
            "intruder_energy": intr.energy_share,
            "intruder_k": intr.k,
            "intruder_eps": intr.eps,
            "intruder_max_cos": [float(c) for c in intr.max_cos],
        }
    )


def _multilora_block(update: ModuleUpdate) -> dict[str, Any]:
    phi_left, phi_right = group_similarity(update)
    s = update.scaling
    block: dict[str, Any] = {
        "n": len(update.groups),
        "r": int(update.groups[0]),
        "phi_left": phi_left.tolist(),
        "phi_right": phi_right.tolist(),
        "scaling_norms": [],
        "scaling": [],
    }
    if s is not None:
        s64 = s.detach().to("cpu", torch.float64)
        norms = s64.reshape(len(update.groups), -1).norm(dim=1)
        block["scaling_norms"] = norms.tolist()
        block["scaling"] = s64.tolist()
    return _jsonable(block)


def _pair_similarity(
    module: str, present: list[_Input], spectra_here: dict[str, Spectrum], options: AnalysisOptions
) -> list[dict[str, Any]]:
    """φ grids, principal angles and Grassmann distance for every pair (a before b)."""
    rows = []
    labels = [i.label for i in present if i.label in spectra_here]
    for ia, a in enumerate(labels):
        for b in labels[ia + 1 :]:
            sa, sb = spectra_here[a], spectra_here[b]
            for side in ("left", "right"):
                ua = sa.U if side == "left" else sa.V
                ub = sb.U if side == "left" else sb.V
                if ua is None or ub is None:
                    continue
                k = min(options.top_k, _support(sa), _support(sb), ua.shape[1], ub.shape[1])
                if k < 1:
                    continue
                ua, ub = ua[:, :k], ub[:, :k]
                rows.append(
                    {
                        "module": module,
                        "a": a,
                        "b": b,
                        "side": side,
                        "k": k,
                        "phi": _jsonable(phi_grid(ua, ub).tolist()),
                        "principal_angles": _jsonable(principal_angles(ua, ub).tolist()),
                        "grassmann_distance": _jsonable(float(grassmann_distance(ua, ub))),
                    }
                )
    return rows


def _support(spec: Spectrum) -> int:
    """Number of singular vectors that span ΔW's range (σ > 0): beyond it they are arbitrary."""
    vals = spec.values
    if vals.numel() == 0 or float(vals[0]) == 0.0:
        return 0
    tol = float(vals[0]) * max(spec.full_size, 1) * torch.finfo(vals.dtype).eps
    return int((vals > tol).sum())


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


def _jsonable(obj: Any) -> Any:
    """Recursively turn tensors/numpy scalars into Python numbers and NaN/Inf into None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj
