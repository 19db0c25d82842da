"""Writing the recipe's outputs, each atomically (temporary file or folder, then rename).

An interrupted run leaves each output either complete or absent (or the previous run's),
never half-written; ``log.json`` is written last, so a run counts as complete only once it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from spectra.io.atomic import atomic_dir, atomic_path

# Where each method's encoder goes, relative to the output folder (lora: a PEFT folder).
ENCODER_FILES: dict[str, str] = {
    "full": "full.safetensors",
    "lora": "lora",
    "multilora": "multilora.safetensors",
}
# The same encoders as torch files, so that `spectra compare base.pt lora.pt multilora.pt`
# (the README's example) runs verbatim on a demo run: a plain state dict, a PEFT-style LoRA
# state dict with α in its metadata, and the MultiLoRA format's torch variant.
ENCODER_PT_FILES: dict[str, str] = {
    "full": "full.pt",
    "lora": "lora.pt",
    "multilora": "multilora.pt",
}


# Intermediate checkpoints: <out>/checkpoints/<method>/checkpoint-<step>/
SNAPSHOT_DIR = "checkpoints"


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` (moved to CPU) to a ``.safetensors`` file with string metadata."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(_cpu(tensors), str(tmp), metadata=metadata)
    return path


def write_torch_state_dict(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a plain state dict (``{key: tensor}``, CPU, nothing else) with ``torch.save``.

    The file loads with ``torch.load(path, weights_only=True)``; it is the torch-pickle twin
    of a ``.safetensors`` output, so that readers of both containers can be checked on the
    same weights (``base.pt`` today; ``lora.pt`` / ``multilora.pt`` can reuse this).
    """
    with atomic_path(path) as tmp:
        torch.save(_cpu(tensors), tmp)
    return path


def write_heads(
    path: Path, heads: dict[str, torch.Tensor], labels: dict[str, tuple[str, ...]], method: str
) -> Path:
    """One method's task heads: ``<task>.weight`` (n_labels, H), ``<task>.bias`` (n_labels,).

    Kept apart from the encoder files so that comparing encoders never meets a head.
    Metadata: ``method``, ``pooling`` (``"mean"``) and ``labels`` (JSON: task → class names).
    """
    meta = {"method": method, "pooling": "mean", "labels": json.dumps(labels, sort_keys=True)}
    return write_safetensors(path, heads, meta)


def write_peft_adapter(peft_model: torch.nn.Module, dest: Path) -> Path:
    """``save_pretrained`` into a temporary folder beside ``dest``, then swap it into place.

    The result is a genuine PEFT adapter folder (``adapter_config.json`` +
    ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads.
    """
    with atomic_dir(dest) as tmp:
        peft_model.save_pretrained(str(tmp))  # type: ignore[operator]
    return dest


def link_or_copy(src: Path, dest: Path) -> Path:
    """``dest`` becomes a hard link to ``src`` (a copy where links cannot cross file systems),
    atomically: a temporary name beside ``dest``, then a rename.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as e:
        if not Path(src).is_file():
            raise FileNotFoundError(f"{src}: no such file to link") from e
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    return dest


def write_json(path: Path, data: dict[str, object]) -> Path:
    """Pretty-printed UTF-8 JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path
