"""LoRA saved as a plain state dict (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` with no
``adapter_config.json``): loralib files and PEFT state dicts saved by hand.

Key layouts read (the full table is in :mod:`spectra.loaders.lora_factors`):

* PEFT state dict: ``base_model.model.<m>.lora_A.weight`` (r, in) / ``.lora_B.weight``
  (out, r), as ``get_peft_model_state_dict`` returns them (or with the adapter name, as a raw
  ``PeftModel.state_dict()`` holds them: ``.lora_A.default.weight``); embeddings
  ``.lora_embedding_A`` / ``_B``;
* loralib (microsoft/LoRA): ``<m>.lora_A`` (r, in) / ``<m>.lora_B`` (out, r), no ``.weight``
  suffix, usually inside the full model state dict beside the base weights (which are not
  analysed: give the base model as BASE).

Where the scaling comes from, first found wins:

1. **metadata stored beside the tensors** (this convention is spectra's; safetensors
   ``__metadata__``, or in a torch file the top-level entry ``"__metadata__"``: a
   ``dict[str, str]``), either

   * ``adapter_config``: PEFT's adapter config as JSON (``LoraConfig.to_dict()``): everything
     an ``adapter_config.json`` gives (``r``, ``lora_alpha``, ``use_rslora``,
     ``fan_in_fan_out``, ``rank_pattern``, ``alpha_pattern``, ``modules_to_save``,
     ``use_dora``); or
   * ``lora_alpha`` (a decimal number, required) and optionally ``r`` (an integer, checked
     against every ``lora_A``), ``use_rslora`` and ``fan_in_fan_out`` (``"true"`` /
     ``"false"``); s = lora_alpha / r (/ √r with rsLoRA), r from each ``lora_A``.

   :func:`write_lora_state_dict` writes the second form;
2. ``--lora-alpha ALPHA`` (s = α/r per module, r from ``lora_A``) or ``--lora-scale S`` (one s
   for every module), i.e. ``LoadOptions.lora_alpha`` / ``lora_scale``;
3. otherwise the file is refused (:class:`~spectra.errors.AmbiguousInputError`) with a message
   naming those two options: loralib stores no α, and guessing it would scale ΔW arbitrarily.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from spectra.errors import AdapterConfigError, AmbiguousInputError
from spectra.io import open_tensors
from spectra.io.containers import save_tensors
from spectra.io.source import TensorSource
from spectra.loaders.base import LoadOptions
from spectra.loaders.detect import peft_kind
from spectra.loaders.lora_factors import LoraFileReader
from spectra.loaders.lora_scaling import LoraRule
from spectra.loaders.peft import PeftLoraConfig

META_ALPHA = "lora_alpha"
META_R = "r"
META_RSLORA = "use_rslora"
META_FAN_IN_FAN_OUT = "fan_in_fan_out"
META_ADAPTER_CONFIG = "adapter_config"
_FLAT_KEYS = (META_ALPHA, META_R, META_RSLORA, META_FAN_IN_FAN_OUT)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class PlainLoraReader(LoraFileReader):
    """A LoRA state dict without ``adapter_config.json`` (implements CheckpointReader, kind
    ``"lora"``, or ``"dora"`` when its ``adapter_config`` metadata says ``use_dora``).

    Args:
        path: The tensor file.
        base: The base model's tensors; when given, module names are mapped to base names and
            ΔW shapes checked against the base weights.
        options: ``dtype``; ``lora_alpha`` / ``lora_scale`` when the file stores no α.

    Raises:
        AmbiguousInputError: Neither the file nor the options give the scaling.
        AdapterConfigError: The metadata is invalid or disagrees with the tensors.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        base: TensorSource | None = None,
        options: LoadOptions = LoadOptions(),
    ):
        source = open_tensors(path)
        rule = lora_rule(source.metadata, options, Path(path))
        super().__init__(
            Path(path),
            source=source,
            weights_path=source.path,
            rule=rule,
            base=base,
            options=options,
        )
        self.config.update(_rule_facts(rule))


def lora_rule(metadata: Mapping[str, str], options: LoadOptions, path: Path) -> LoraRule:
    """The scaling rule of a plain LoRA file: its metadata, else the options (module docstring).

    Raises:
        AmbiguousInputError: Neither gives α or s.
        AdapterConfigError: Invalid metadata, or both metadata forms at once.
        UnsupportedFormatError: An ``adapter_config`` of a variant or base-changing init.
    """
    flat = [k for k in _FLAT_KEYS if k in metadata]
    if META_ADAPTER_CONFIG in metadata:
        if flat:
            raise AdapterConfigError(
                f"the metadata holds both {META_ADAPTER_CONFIG!r} and {flat}; keep one of the "
                "two forms",
                path=path,
                key=flat[0],
            )
        return _config_rule(metadata[META_ADAPTER_CONFIG], path)
    if flat:
        return _flat_rule(metadata, path)
    if options.lora_scale is not None:
        return LoraRule(source="--lora-scale", scale=options.lora_scale)
    if options.lora_alpha is not None:
        return LoraRule(source="--lora-alpha", lora_alpha=options.lora_alpha)
    raise AmbiguousInputError(
        "this file holds LoRA factors but no scaling: there is no adapter_config.json beside "
        f"it and no {META_ALPHA!r} in its metadata, so s = alpha/r is unknown; pass "
        "--lora-alpha ALPHA (s = ALPHA/r, r from each lora_A) or --lora-scale S (one s for "
        "every module), or write the file with spectra.loaders.write_lora_state_dict(..., "
        "lora_alpha=...)",
        path=path,
    )


def write_lora_state_dict(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    *,
    lora_alpha: float,
    r: int | None = None,
    use_rslora: bool = False,
    fan_in_fan_out: bool = False,
) -> Path:
    """Write LoRA factors with their scaling as metadata, so the file alone gives ΔW.

    For example ``write_lora_state_dict("lora.pt", get_peft_model_state_dict(model),
    lora_alpha=16, r=8)``. Written atomically (temporary file, then rename).

    Args:
        path: ``.safetensors`` (metadata in the header) or ``.pt`` / ``.pth`` / ``.bin`` (a
            torch file holding the tensors and a ``"__metadata__"`` string map).
        tensors: LoRA factors in PEFT's or loralib's naming (module docstring); other tensors
            (base weights) may be included and are stored as they are.
        lora_alpha: α; s = α / r (α / √r with ``use_rslora``).
        r: The rank of every module, stored and checked on write and read (None: not stored;
            r is then taken from each ``lora_A``).
        use_rslora: s = α / √r.
        fan_in_fan_out: The base weights are stored (in, out) (GPT-2 ``Conv1D``).

    Returns:
        The path written.

    Raises:
        ValueError: An unknown suffix, a non-finite α, no LoRA factor among the tensors, or a
            ``lora_A`` whose rank is not ``r``.
    """
    path = Path(path)
    if not math.isfinite(lora_alpha):
        raise ValueError(f"lora_alpha must be finite, got {lora_alpha}")
    factors = [k for k in tensors if k.endswith((".lora_A.weight", ".lora_A", ".lora_embedding_A"))]
    if not factors:
        raise ValueError(
            "no LoRA factor (*.lora_A.weight, *.lora_A, *.lora_embedding_A) among the tensors"
        )
    bad = [k for k in factors if r is not None and tensors[k].shape[0] != r]
    if bad:
        raise ValueError(f"{bad[0]} has rank {tensors[bad[0]].shape[0]}, not r = {r}")
    meta = {META_ALPHA: repr(float(lora_alpha)), META_RSLORA: _bool_text(use_rslora)}
    meta[META_FAN_IN_FAN_OUT] = _bool_text(fan_in_fan_out)
    if r is not None:
        meta[META_R] = str(r)
    return save_tensors(path, tensors, meta)


def _config_rule(text: str, path: Path) -> LoraRule:
    """The rule of an ``adapter_config`` JSON metadata entry."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise AdapterConfigError(
            f"the {META_ADAPTER_CONFIG!r} metadata is not JSON ({e})",
            path=path,
            key=META_ADAPTER_CONFIG,
        ) from e
    if not isinstance(raw, dict):
        raise AdapterConfigError(
            f"the {META_ADAPTER_CONFIG!r} metadata must be a JSON object",
            path=path,
            key=META_ADAPTER_CONFIG,
        )
    raw.setdefault("peft_type", "LORA")
    peft_kind(raw, path)  # refuses variants and base-changing inits
    return PeftLoraConfig.from_json(raw, path).rule("adapter_config metadata")


def _flat_rule(metadata: Mapping[str, str], path: Path) -> LoraRule:
    """The rule of the flat ``lora_alpha`` / ``r`` / ``use_rslora`` / ``fan_in_fan_out`` keys."""
    if META_ALPHA not in metadata:
        raise AdapterConfigError(
            f"the metadata has {[k for k in _FLAT_KEYS if k in metadata]} but no {META_ALPHA!r}, "
            "which the scaling needs; add it",
            path=path,
            key=META_ALPHA,
        )
    try:
        alpha = float(metadata[META_ALPHA])
        r = int(metadata[META_R]) if META_R in metadata else None
    except ValueError as e:
        raise AdapterConfigError(
            f"metadata {META_ALPHA!r} must be a number and {META_R!r} an integer ({e})",
            path=path,
            key=META_ALPHA,
        ) from e
    if not math.isfinite(alpha) or (r is not None and r <= 0):
        raise AdapterConfigError(
            f"metadata {META_ALPHA} = {alpha} must be finite and {META_R} = {r} positive",
            path=path,
            key=META_ALPHA,
        )
    return LoraRule(
        source="file metadata",
        lora_alpha=alpha,
        r=r,
        use_rslora=_bool_meta(metadata, META_RSLORA, path),
        fan_in_fan_out=_bool_meta(metadata, META_FAN_IN_FAN_OUT, path),
    )


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _bool_meta(metadata: Mapping[str, str], key: str, path: Path) -> bool:
    value = metadata.get(key, "false").strip().lower()
    if value not in ("true", "false"):
        raise AdapterConfigError(
            f"metadata {key!r} must be 'true' or 'false', got {metadata[key]!r}", path=path, key=key
        )
    return value == "true"


def _rule_facts(rule: LoraRule) -> dict[str, object]:
    """The rule's facts for ``reader.config`` (shown by ``spectra inspect``)."""
    facts: dict[str, object] = {
        "lora_alpha": rule.lora_alpha,
        "scale": rule.scale,
        "r": rule.r,
        "use_rslora": rule.use_rslora,
        "fan_in_fan_out": rule.fan_in_fan_out,
    }
    if rule.modules_to_save:
        facts["modules_to_save"] = list(rule.modules_to_save)
    if rule.use_dora:
        facts["use_dora"] = True
    return facts
