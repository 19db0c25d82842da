"""LoRA and DoRA adapters in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``
/ ``.bin``.

The config gives the scaling rule (``r``, ``lora_alpha``, ``use_rslora``, ``rank_pattern``,
``alpha_pattern``, ``fan_in_fan_out``), ``use_dora`` and ``modules_to_save``; the keys, layouts
and ΔW of each module are read by :class:`~spectra.loaders.lora_factors.LoraFileReader` (see
its module docstring for the table of keys, shapes and ΔW, the stored-layout choice, DoRA and
``modules_to_save``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra.errors import AdapterConfigError, FileFormatError
from spectra.io import open_tensors
from spectra.io.jsonfile import fields_as_json
from spectra.io.source import TensorSource
from spectra.loaders.base import LoadOptions
from spectra.loaders.detect import find_peft_files, peft_kind, read_adapter_config
from spectra.loaders.lora_factors import LoraFileReader
from spectra.loaders.lora_scaling import LoraRule


@dataclass(frozen=True)
class PeftLoraConfig:
    """The fields of ``adapter_config.json`` that determine ΔW, validated.

    Attributes:
        r: Default rank (``rank_pattern`` overrides it per module).
        lora_alpha: Default α (``alpha_pattern`` overrides it per module); may be fractional
            (PEFT's PiSSA conversion multiplies it by √2 under rsLoRA).
        use_rslora: s = α/√r instead of α/r.
        fan_in_fan_out: Base weights stored (in, out) (GPT-2 ``Conv1D``): ΔW = s·(BA)ᵀ.
        target_modules: As saved (names, or one regex string); informational.
        rank_pattern: Module pattern → r, PEFT's matching rule (lora_scaling.pattern_value).
        alpha_pattern: Module pattern → α, same rule.
        base_model_name_or_path: As saved; informational.
        modules_to_save: Modules saved whole beside the adapter (ΔW = saved − W0).
        use_dora: DoRA adapter (a magnitude vector per module).
    """

    r: int
    lora_alpha: float
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    target_modules: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    base_model_name_or_path: str | None = None
    modules_to_save: tuple[str, ...] = ()
    use_dora: bool = False

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], path: Path) -> PeftLoraConfig:
        """Validate a parsed ``adapter_config.json``.

        Raises:
            AdapterConfigError: A field is missing, of the wrong type or out of range; the
                error names the field.
        """
        targets = raw.get("target_modules")
        if targets is not None and not isinstance(targets, (str, list)):
            raise AdapterConfigError(
                "target_modules must be a list or a string", path=path, key="target_modules"
            )
        base_name = raw.get("base_model_name_or_path")
        saved = raw.get("modules_to_save") or []
        if not isinstance(saved, list) or not all(isinstance(m, str) for m in saved):
            raise AdapterConfigError(
                f"modules_to_save must be a list of module names, got {saved!r}",
                path=path,
                key="modules_to_save",
            )
        return cls(
            r=_positive_int(raw.get("r"), "r", path),
            lora_alpha=_number(raw.get("lora_alpha"), "lora_alpha", path),
            use_rslora=_flag(raw, "use_rslora", path),
            fan_in_fan_out=_flag(raw, "fan_in_fan_out", path),
            target_modules=sorted(targets) if isinstance(targets, list) else targets,
            rank_pattern=_pattern(raw, "rank_pattern", path, _positive_int),
            alpha_pattern=_pattern(raw, "alpha_pattern", path, _number),
            base_model_name_or_path=None if base_name is None else str(base_name),
            modules_to_save=tuple(saved),
            use_dora=_flag(raw, "use_dora", path),
        )

    def rule(self, source: str) -> LoraRule:
        """The scaling and layout rule of this config, ``source`` naming where it was read."""
        return LoraRule(
            source=source,
            lora_alpha=self.lora_alpha,
            r=self.r,
            use_rslora=self.use_rslora,
            fan_in_fan_out=self.fan_in_fan_out,
            rank_pattern=self.rank_pattern,
            alpha_pattern=self.alpha_pattern,
            modules_to_save=self.modules_to_save,
            use_dora=self.use_dora,
        )

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (:func:`~spectra.io.jsonfile.fields_as_json`)."""
        return fields_as_json(self)


class PeftLoraReader(LoraFileReader):
    """A PEFT LoRA or DoRA adapter (implements CheckpointReader, kind ``"lora"`` / ``"dora"``).

    Only the config, key names and shapes are read on construction; :meth:`update` reads one
    module's tensors (see :class:`~spectra.loaders.lora_factors.LoraFileReader`).

    Args:
        path: The adapter directory, or its ``adapter_config.json`` /
            ``adapter_model.safetensors`` / ``adapter_model.bin`` (the other is found beside it).
        base: The base model's tensors; when given, module names are mapped to base names and
            ΔW shapes are checked against the base weights. DoRA and ``modules_to_save``
            modules need it for their ΔW.
        options: ``dtype`` is the compute dtype (float32 or float64).

    Raises:
        FileFormatError: No adapter config here or beside the file.
        UnsupportedFormatError: Not LoRA/DoRA, a LoRA variant, or a base-changing init.
        AdapterConfigError: The config or tensors are invalid or disagree.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        base: TensorSource | None = None,
        options: LoadOptions = LoadOptions(),
    ):
        found = find_peft_files(Path(path))
        if found is None:
            raise FileFormatError(
                "no adapter_config.json here or beside this file; pass a PEFT adapter directory",
                path=path,
            )
        config_path, weights_path = found
        raw = read_adapter_config(config_path)
        peft_kind(raw, config_path)  # refuses variants, base-changing inits, non-LoRA
        self._cfg = PeftLoraConfig.from_json(raw, config_path)
        super().__init__(
            Path(path),
            source=open_tensors(weights_path),
            weights_path=weights_path,
            rule=self._cfg.rule("adapter_config.json"),
            base=base,
            options=options,
        )
        self.config = {**self._cfg.as_dict(), **self.config}


def _positive_int(value: object, name: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdapterConfigError(
            f"{name} must be a positive integer, got {value!r}", path=path, key=name
        )
    if value <= 0:
        raise AdapterConfigError(
            f"{name} must be a positive integer, got {value}", path=path, key=name
        )
    return value


def _number(value: object, name: str, path: Path) -> float:
    if value is None:
        raise AdapterConfigError(f"{name} is missing; add it to the config", path=path, key=name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterConfigError(
            f"{name} must be a finite number, got {value!r}", path=path, key=name
        )
    return float(value)


def _flag(raw: Mapping[str, Any], name: str, path: Path) -> bool:
    value = raw.get(name, False)
    if not isinstance(value, bool):
        raise AdapterConfigError(
            f"{name} must be true or false, got {value!r}", path=path, key=name
        )
    return value


# A group holding a quantifier, itself quantified: (a+)+, (a*)*, (x|y+){2,}. Pattern keys are
# matched as regexes (PEFT's rule), so such a key from a downloaded config could backtrack for
# hours on a long module name; real rank/alpha patterns never need one.
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*}][^()]*\)\s*[+*{]")


def _pattern(raw: Mapping[str, Any], name: str, path: Path, check: Any) -> dict[str, Any]:
    """A ``rank_pattern`` / ``alpha_pattern`` dict, order kept (first match wins)."""
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise AdapterConfigError(
            f"{name} must be a JSON object, got {value!r}", path=path, key=name
        )
    out: dict[str, Any] = {}
    for key, v in value.items():
        try:
            re.compile(key)
        except re.error as e:
            raise AdapterConfigError(
                f"{name} key {key!r} is not a valid regex ({e})", path=path, key=name
            ) from e
        if _NESTED_QUANTIFIER.search(key):
            raise AdapterConfigError(
                f"{name} key {key!r} repeats a repeated group (like (a+)+), which can make "
                "regex matching take exponential time; spectra refuses it. Write the module "
                "name or a simple pattern instead",
                path=path, key=name,
            )  # fmt: skip
        out[key] = check(v, f"{name}[{key!r}]", path)
    return out
