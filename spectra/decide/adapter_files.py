"""Writing a PEFT LoRA adapter directory from factors, in PEFT's own on-disk layout.

Keys (``save_pretrained``'s, adapter name stripped; ``M`` = ``base_model.model.<module>``):

==========================  =========================================  =====================
layer                       keys                                       ΔW (stored layout)
==========================  =========================================  =====================
``nn.Linear`` (out, in)     ``M.lora_A.weight`` (r, in),               s·B A
                            ``M.lora_B.weight`` (out, r)
GPT-2 ``Conv1D`` (in, out)  same keys and shapes, ``fan_in_fan_out``   s·(B A)ᵀ
``nn.Embedding`` (n, d)     ``M.lora_embedding_A`` (r, n),             s·(B A)ᵀ
                            ``M.lora_embedding_B`` (d, r)
``lora_bias``               ``M.lora_B.bias`` (out,)                   bias += s·b
``modules_to_save``         ``M.<param>`` as the module's own tensors  replaces the module
==========================  =========================================  =====================

With ΔW_r = L Rᵀ (:class:`~spectra.decide.truncate.Truncation`) and s = 1 (α = r): a Linear
takes B = L, A = Rᵀ; the transposed layouts take B = R, A = Lᵀ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from spectra.io.atomic import atomic_dir

PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def lora_tensors(
    module: str, left: torch.Tensor, right: torch.Tensor, layout: str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The PEFT keys of one module whose ΔW (stored layout) is ``left @ right.T`` at s = 1.

    Args:
        module: Module path.
        left: (p, r).
        right: (q, r).
        layout: ``"linear"``, ``"conv1d"`` or ``"embedding"``.
        dtype: Stored dtype.

    Raises:
        ValueError: Another layout.
    """
    m = PEFT_PREFIX + module
    if layout == "linear":
        b, a = left, right.T  # (out, r), (r, in)
    elif layout in ("conv1d", "embedding"):
        b, a = right, left.T  # (out | d, r), (r, in | n)
    else:
        raise ValueError(f"{module}: no LoRA layout for {layout!r}")
    if layout == "embedding":
        names = (f"{m}.lora_embedding_A", f"{m}.lora_embedding_B")
    else:
        names = (f"{m}.lora_A.weight", f"{m}.lora_B.weight")
    return {
        names[0]: a.to(dtype).contiguous(),
        names[1]: b.to(dtype).contiguous(),
    }


def write_adapter(
    out: Path,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    sidecar: tuple[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (+ a JSON beside them)
    into ``out`` atomically: a temporary directory renamed into place."""
    with atomic_dir(out) as tmp:
        save_file(dict(tensors), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(dict(config), indent=2) + "\n", "utf-8")
        if sidecar is not None:
            name, data = sidecar
            (tmp / name).write_text(json.dumps(dict(data), indent=1) + "\n", "utf-8")
    return out
