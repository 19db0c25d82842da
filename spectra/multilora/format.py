"""The on-disk MultiLoRA format (version 1): one file holds everything needed to rebuild ΔW.

This module is the format's one definition: its writer (:func:`write_multilora`) and the parser
of its metadata (:func:`parse_file_config`), used by the loader
(:mod:`spectra.loaders.multilora`) and by :func:`spectra.multilora.inject.load_multilora`.

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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from spectra.errors import AdapterConfigError, FileFormatError, UnsupportedFormatError
from spectra.io.containers import save_tensors

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
    return save_tensors(path, tensors, file_metadata(config))


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


def parse_file_config(metadata: Mapping[str, str], path: Path) -> MultiLoRAFileConfig:
    """The validated ``config`` of a MultiLoRA file's metadata.

    Raises:
        FileFormatError: The metadata does not mark a spectra MultiLoRA file.
        UnsupportedFormatError: A format version this spectra does not read.
        AdapterConfigError: The config is not JSON, or a field is missing or invalid (named).
    """
    if not is_multilora_metadata(metadata):
        raise FileFormatError(
            "no 'format' = 'spectra.multilora' metadata: not a spectra MultiLoRA file; write it "
            "with spectra.multilora.format.write_multilora",
            path=path,
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"MultiLoRA format_version {version!r}; this spectra reads version {FORMAT_VERSION!r}: "
            "upgrade spectra",
            path=path,
            key="format_version",
        )
    try:
        raw = json.loads(metadata.get("config", ""))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, huge int, nesting too deep
        raise AdapterConfigError(
            f"the 'config' metadata is not usable JSON ({type(e).__name__}: {e})",
            path=path,
            key="config",
        ) from e
    if not isinstance(raw, dict):
        raise AdapterConfigError(
            "the 'config' metadata must be a JSON object", path=path, key="config"
        )
    return _config_from_json(raw, path)


def _config_from_json(raw: dict[str, Any], path: Path) -> MultiLoRAFileConfig:
    def need(name: str, ok: bool, what: str) -> None:
        if not ok:
            raise AdapterConfigError(
                f"config field {name!r} must be {what}, got {raw.get(name)!r}",
                path=path,
                key=f"config.{name}",
            )

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    r, n, alpha, scaling = raw.get("r"), raw.get("n"), raw.get("lora_alpha"), raw.get("scaling")
    need("r", is_int(r), "a positive integer")
    need("n", is_int(n), "a positive integer")
    number = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    need("lora_alpha", number and math.isfinite(alpha), "a finite number")  # type: ignore[arg-type]
    need("scaling", scaling in ("vector", "scalar"), "'vector' or 'scalar'")
    targets = raw.get("target_modules") or []
    need(
        "target_modules",
        isinstance(targets, list) and all(isinstance(t, str) for t in targets),
        "a list of strings",
    )
    need(
        "parameter_matched", isinstance(raw.get("parameter_matched", False), bool), "true or false"
    )
    base_model = raw.get("base_model")
    need("base_model", base_model is None or isinstance(base_model, str), "a string or null")
    return MultiLoRAFileConfig(
        r=r,  # type: ignore[arg-type]
        n=n,  # type: ignore[arg-type]
        lora_alpha=float(alpha),  # type: ignore[arg-type]
        scaling=scaling,  # type: ignore[arg-type]
        target_modules=tuple(targets),
        parameter_matched=raw.get("parameter_matched", False),
        base_model=base_model,
    )
