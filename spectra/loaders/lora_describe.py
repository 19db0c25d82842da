"""What ``spectra inspect`` and the notes say about a LoRA file's modules: the text only.

Every string here describes a :class:`~spectra.loaders.lora_keys.LoraModule` (layout, scaling,
structure) or a config problem; no tensor is read and nothing is computed.
"""

from __future__ import annotations

from typing import Any

from spectra.loaders.base import ModuleInfo
from spectra.loaders.lora_keys import Layout, LoraModule
from spectra.loaders.lora_scaling import LoraRule, pattern_key

LAYOUT_TEXT: dict[Layout, str] = {
    "linear": "nn.Linear (out, in): ΔW = s·B·A",
    "conv1d": "Conv1D, fan_in_fan_out (in, out): ΔW = s·(B·A)ᵀ as stored; left vectors are input-side",
    "embedding": "nn.Embedding (num_embeddings, dim): ΔW = s·(B·A)ᵀ as stored",
    "conv": "conv kernel flattened to (out, in·kh·kw): ΔW = s·B·A",
}
SAVED_TEXT = "dense: W_saved - W_base (modules_to_save)"


def update_notes(p: LoraModule) -> tuple[str, ...]:
    """Notes carried by a module's ΔW: a transposed layout, a stored ``lora_B`` bias."""
    notes: list[str] = []
    if p.layout in ("conv1d", "embedding"):
        notes.append(f"layout: {LAYOUT_TEXT[p.layout]}")
    if p.key_bias is not None:
        notes.append(
            f"{p.key_bias!r} is stored (lora_bias): the adapter also shifts this module's "
            "bias; ΔW covers the weight only"
        )
    return tuple(notes)


def lora_info(name: str, p: LoraModule, *, stored_dtype: str, has_base: bool) -> ModuleInfo:
    """The :class:`ModuleInfo` of a LoRA or DoRA module reported under ``name``."""
    dora = p.key_magnitude is not None
    detail: dict[str, Any] = {
        "layout": LAYOUT_TEXT[p.layout],
        "alpha": p.alpha,
        "r": p.r,
        "stored_dtype": stored_dtype,
        "lora_B.bias": p.key_bias is not None,
        "structure": (
            f"DoRA: dense, m ⊙ (W0 + sBA)/‖·‖ − W0{'' if has_base else ' (needs BASE)'}"
            if dora
            else f"LoRA: factored, rank ≤ r = {p.r}"
        ),
    }
    if name != p.name:
        detail["adapter_module"] = p.name
    scaling = p.scaling_text + (", then the DoRA magnitude m" if dora else "")
    rank = None if dora else p.r
    return ModuleInfo(module=name, shape=p.shape, rank=rank, scaling=scaling, detail=detail)


def saved_info(
    name: str,
    *,
    file_name: str,
    key: str,
    stored: tuple[int, ...],
    shape: tuple[int, int],
    stored_dtype: str,
    has_base: bool,
) -> ModuleInfo:
    """The :class:`ModuleInfo` of a saved module (``modules_to_save``) reported under ``name``."""
    detail: dict[str, Any] = {
        "saved_key": key,
        "stored_dtype": stored_dtype,
        "structure": f"modules_to_save: dense, saved − W0{'' if has_base else ' (needs BASE)'}",
    }
    if len(stored) > 2:
        detail["stored_shape"] = list(stored)
    if name != file_name:
        detail["adapter_module"] = file_name
    return ModuleInfo(module=name, shape=shape, rank=None, scaling=SAVED_TEXT, detail=detail)


def unused_pattern_notes(rule: LoraRule, modules: list[str]) -> list[str]:
    """A note per ``rank_pattern`` / ``alpha_pattern`` holding keys that decide no module (they
    match none, or only modules an earlier key took): such keys have no effect in PEFT either,
    which usually means the config was edited or copied from another adapter."""
    notes = []
    for name, pattern in (
        ("rank_pattern", rule.rank_pattern),
        ("alpha_pattern", rule.alpha_pattern),
    ):
        used = {pattern_key(m, list(pattern)) for m in modules}
        unused = [k for k in pattern if k not in used]
        if unused:
            notes.append(
                f"{rule.source} {name} keys {unused} decide none of the {len(modules)} adapted "
                "modules and have no effect"
            )
    return notes


def fan_in_fan_out_hint(p: LoraModule) -> str:
    """Extra text for a shape-mismatch error: why a fan_in_fan_out disagreement is refused."""
    flag = "true" if p.layout == "conv1d" else "false"
    return (
        f" (the file says fan_in_fan_out: {flag}; PEFT saves this one flag for all modules, so "
        "an adapter mixing Conv1D and nn.Linear targets cannot be read from files; loralib's "
        "nn.Embedding LoRA is stored like a Linear and is not read either)"
    )
