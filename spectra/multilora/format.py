"""The on-disk MultiLoRA format (version 1): one file holds everything needed to rebuild ΔW.

No public standard exists for MultiLoRA checkpoints, so spectra defines this one; the
reference layer writes it and spectra's loader reads it.

Tensors, for every adapted module ``<m>`` (its module path in the base model):

==========================  ==================  =========================================
key                         shape               meaning
==========================  ==================  =========================================
``<m>.multilora_A``         (n, r, in)          A_i stacked over the n parallel modules
``<m>.multilora_B``         (n, out, r)         B_i stacked
``<m>.multilora_scaling``   (n, out) or (n,)    learned s_i: per output channel or scalar
==========================  ==================  =========================================

Metadata (safetensors ``__metadata__``; in a torch file, the entry ``"__metadata__"`` of the
saved dict, a ``dict[str, str]``):

* ``format`` = ``"spectra.multilora"``, ``format_version`` = ``"1"``;
* ``config`` = JSON object with at least ``r`` (rank of each parallel module), ``n``,
  ``lora_alpha`` and ``scaling`` (``"vector"`` | ``"scalar"``); optionally
  ``target_modules``, ``parameter_matched``, ``base_model``.

ΔW = (lora_alpha / r) · Σ_i diag(s_i) B_i A_i, i.e. the factored form
left = (α/r)·[s_1 ⊙ B_1, …, s_n ⊙ B_n] (out, n·r), right = [A_1; …; A_n] (n·r, in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

FORMAT_NAME = "spectra.multilora"
FORMAT_VERSION = "1"
SUFFIX_A = ".multilora_A"
SUFFIX_B = ".multilora_B"
SUFFIX_S = ".multilora_scaling"
SUFFIXES = (SUFFIX_A, SUFFIX_B, SUFFIX_S)


@dataclass(frozen=True)
class MultiLoRAFileConfig:
    """The ``config`` entry of a MultiLoRA file.

    Attributes:
        r: Rank of each of the n parallel modules.
        n: Number of parallel modules.
        lora_alpha: α; the update is scaled by α / r.
        scaling: ``"vector"``: s_i has one entry per output channel; ``"scalar"``: one number.
        target_modules: Names/patterns the layer was injected into (informational).
        parameter_matched: True when r = r_lora / n (same parameter count as a rank-r_lora LoRA).
        base_model: Name or path of the base model (informational).
    """

    r: int
    n: int
    lora_alpha: float
    scaling: Literal["vector", "scalar"] = "vector"
    target_modules: tuple[str, ...] = ()
    parameter_matched: bool = False
    base_model: str | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "r": self.r,
            "n": self.n,
            "lora_alpha": self.lora_alpha,
            "scaling": self.scaling,
            "target_modules": list(self.target_modules),
            "parameter_matched": self.parameter_matched,
            "base_model": self.base_model,
        }
        return json.dumps(d, sort_keys=True)


def file_metadata(config: MultiLoRAFileConfig) -> dict[str, str]:
    """The string-to-string metadata block written beside the tensors."""
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_json()}


def write_multilora(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    config: MultiLoRAFileConfig,
) -> Path:
    """Write a MultiLoRA checkpoint atomically (temp file in the same directory, then rename).

    Args:
        path: Destination; ``.safetensors`` writes safetensors, ``.pt``/``.pth``/``.bin`` a
            torch file holding only tensors and the ``"__metadata__"`` string map.
        tensors: ``<m>.multilora_A`` (n, r, in), ``<m>.multilora_B`` (n, out, r),
            ``<m>.multilora_scaling`` (n, out) or (n,) for every module ``<m>``.
        config: The file's config.

    Returns:
        The path written.
    """
    from spectra.io.atomic import atomic_path

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = file_metadata(config)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=meta)
        elif path.suffix in (".pt", ".pth", ".bin"):
            torch.save({**tensors, "__metadata__": meta}, tmp)
        else:
            raise ValueError(f"{path}: use a .safetensors, .pt, .pth or .bin file name")
    return path


def stack_factors(
    a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The n parallel modules as one factor pair: ΔW = left @ right.

    The one place the stacking is done; the reference layer (forward, ΔW) and the loader use it.

    Args:
        a: (n, r, in) A_i stacked.
        b: (n, out, r) B_i stacked.
        s: (n, out) per-channel or (n,) scalar scaling s_i.
        scale: α / r.

    Returns:
        left: (out, n·r) = scale·[s_1 ⊙ B_1, …, s_n ⊙ B_n] (module i owns columns i·r…);
        right: (n·r, in) = [A_1; …; A_n] (module i owns rows i·r…).
    """
    n, out, r = b.shape
    s = s[:, :, None] if s.ndim == 2 else s[:, None, None]  # (n, out, 1) or (n, 1, 1)
    left = (scale * s) * b  # (n, out, r): scale·diag(s_i) B_i
    return left.permute(1, 0, 2).reshape(out, n * r), a.reshape(n * r, a.shape[-1])


def is_multilora_metadata(metadata: dict[str, str]) -> bool:
    """True when a file's metadata marks it as a spectra MultiLoRA checkpoint."""
    return metadata.get("format") == FORMAT_NAME
