"""The LoRA scaling rule and PEFT's per-module pattern lookup: the one place both live.

Every reader that scales a low-rank update (PEFT LoRA, DoRA, plain LoRA state dicts, MultiLoRA,
kohya, LyCORIS) calls :func:`lora_scaling`; kohya / LyCORIS files resolve a missing α with
:func:`alpha_or_rank`; every reader that resolves ``rank_pattern`` / ``alpha_pattern`` goes
through :class:`LoraRule` (PEFT's rule, :func:`pattern_key`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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


def alpha_or_rank(alpha: float | None, r: int) -> float:
    """α of a kohya / LyCORIS module: the stored ``alpha``, or r when it is missing or zero.

    sd-scripts (``networks/lora.py``, ``LoRAModule.__init__``: ``alpha = lora_dim if alpha is
    None or alpha == 0``) and LyCORIS (``lycoris/modules/loha.py``, ``lokr.py``, same line)
    both read it so, which makes s = α/r = 1.
    """
    return float(r) if alpha is None or alpha == 0 else float(alpha)


@dataclass(frozen=True)
class LoraRule:
    """How the factors of one LoRA file are scaled and laid out, and where that was read.

    Exactly one of ``lora_alpha`` / ``scale`` is set: s = α/r (α/√r with rsLoRA) per module
    (α and r after ``alpha_pattern`` / ``rank_pattern``), or one fixed s for every module
    (``--lora-scale``).

    Attributes:
        source: Where these numbers come from, shown to the user (``"adapter_config.json"``,
            ``"file metadata"``, ``"--lora-alpha"``, ``"--lora-scale"``).
        lora_alpha: Default α.
        scale: Fixed s for every module, instead of α/r.
        r: Default rank the file promises (checked against each ``lora_A``); None: r is taken
            from ``lora_A.shape[0]`` unchecked.
        use_rslora: s = α/√r.
        fan_in_fan_out: Base weights stored (in, out) (GPT-2 ``Conv1D``): ΔW = s·(BA)ᵀ.
        rank_pattern: Module pattern → r (PEFT's rule, :func:`pattern_key`).
        alpha_pattern: Module pattern → α (same rule).
        modules_to_save: Names of modules saved whole (PEFT's ``modules_to_save``).
        use_dora: DoRA: a magnitude vector per module; ΔW needs the base weight. None: the
            source does not say (file metadata without a config, ``--lora-alpha``,
            ``--lora-scale``); the file's keys decide (magnitudes stored for every module).
    """

    source: str
    lora_alpha: float | None = None
    scale: float | None = None
    r: int | None = None
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    modules_to_save: tuple[str, ...] = ()
    use_dora: bool | None = None

    def __post_init__(self) -> None:
        if (self.lora_alpha is None) == (self.scale is None):
            raise ValueError("set exactly one of lora_alpha and scale")

    def rank_for(self, module: str) -> tuple[int | None, str]:
        """(expected r or None, where it came from) for a module, by PEFT's pattern rule."""
        key = pattern_key(module, list(self.rank_pattern))
        if key is not None:
            return self.rank_pattern[key], f"rank_pattern key {key!r} of the {self.source}"
        return self.r, f"field 'r' of the {self.source}"

    def scaling(self, module: str, r: int) -> tuple[float, float | None, str]:
        """(s, α or None, the rule with its numbers) for a module of rank r."""
        if self.scale is not None:
            return self.scale, None, f"s = {self.scale:g} ({self.source})"
        key = pattern_key(module, list(self.alpha_pattern))
        alpha = self.alpha_pattern[key] if key is not None else self.lora_alpha
        assert alpha is not None
        s = lora_scaling(alpha, r, use_rslora=self.use_rslora)
        return s, alpha, scaling_rule_text(alpha, r, use_rslora=self.use_rslora)
