"""The LoRA scaling rule and PEFT's per-module pattern lookup: the one place both live.

Every reader that scales a low-rank update (PEFT LoRA, MultiLoRA, later kohya / loralib) calls
:func:`lora_scaling`; every reader that resolves ``rank_pattern`` / ``alpha_pattern`` calls
:func:`pattern_value`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")


def lora_scaling(alpha: float, r: int, *, use_rslora: bool) -> float:
    """The factor s in ΔW = s · B A.

    s = α / r (Hu et al. 2021), or s = α / √r with rank-stabilized LoRA (Kalajdzievski 2023).
    Matches ``peft.tuners.lora.layer.LoraLayer.update_layer`` (peft 0.21).

    Args:
        alpha: lora_alpha of the module (after ``alpha_pattern``).
        r: Rank of the module (after ``rank_pattern``), > 0.
        use_rslora: Divide by √r instead of r.

    Returns:
        s as a Python float.

    Raises:
        ValueError: r ≤ 0 (callers validate configs first and raise AdapterConfigError).
    """
    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got r = {r}")
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def scaling_rule_text(alpha: float, r: int, *, use_rslora: bool) -> str:
    """The rule with its numbers, for ``spectra inspect``: e.g. ``"alpha/r = 16/8 = 2"``."""
    s = lora_scaling(alpha, r, use_rslora=use_rslora)
    rule = f"alpha/sqrt(r) = {alpha:g}/sqrt({r})" if use_rslora else f"alpha/r = {alpha:g}/{r}"
    return f"{rule} = {s:.6g}"


def pattern_key(module: str, keys: list[str] | tuple[str, ...]) -> str | None:
    """The first pattern key that matches a module name, or None.

    PEFT's rule (``peft.utils.other.get_pattern_key``, peft 0.21): key k matches module m when
    ``re.match(rf"(.*\\.)?({k})$", m)`` succeeds, i.e. m is k itself or ends in ``.`` + k, with k
    read as a regular expression. Keys are tried in the mapping's (insertion = JSON) order and
    the first match wins. ``re.match`` + ``$`` is used (not ``re.fullmatch``) to match PEFT
    exactly, including ``$`` matching before a trailing newline.

    Args:
        module: Module path in the base model, e.g. ``model.layers.0.self_attn.q_proj``.
        keys: Pattern keys, in order.
    """
    for key in keys:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


def pattern_value(module: str, pattern: Mapping[str, V], default: V) -> V:
    """``pattern[k]`` for the first key k matching ``module`` (see :func:`pattern_key`), else
    ``default``. This is how PEFT resolves ``rank_pattern`` and ``alpha_pattern``
    (``peft.tuners.lora.model.LoraModel._create_and_replace``)."""
    key = pattern_key(module, list(pattern))
    return default if key is None else pattern[key]
