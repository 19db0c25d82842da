"""LoRA adapters in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``/``.bin``.

Keys (the adapter name is stripped by PEFT on save; ``base_model.model.`` is stripped here):

=====================================  ===================  ================================
key                                    shape                ΔW (stored layout of the weight)
=====================================  ===================  ================================
``<m>.lora_A.weight``, ``.lora_B``     (r, in), (out, r)    s · B A                (out, in)
  same, ``fan_in_fan_out: true``       (r, in), (out, r)    s · (B A)ᵀ             (in, out)
``<m>.lora_embedding_A``, ``_B``       (r, n_emb), (d, r)   s · (B A)ᵀ             (n_emb, d)
conv: ``lora_A`` / ``lora_B``          (r, in, kh, kw),     s · B A, flattened     (out, in·kh·kw)
                                       (out, r, 1, 1)
``<m>.lora_B.bias``                    (out,)               not part of ΔW (listed in notes)
=====================================  ===================  ================================

**choice: ΔW is reported in the layout the base weight is stored in**, so that it equals
``merge_and_unload()``'s weight minus the base weight key for key, and can be compared with a
full fine-tune of the same model (whose ΔW = W_tuned − W_base is necessarily in the stored
layout). For ``nn.Linear`` and conv this is the (out, in) layout; for GPT-2's ``Conv1D``
(``fan_in_fan_out``) and for ``nn.Embedding`` it is the transpose, (in, out) and
(num_embeddings, dim): there the *left* singular vectors of ΔW are on the input side. Each such
module says so in ``ModuleUpdate.notes`` and ``ModuleInfo.detail["layout"]``.

``fan_in_fan_out`` is one flag for the whole adapter (PEFT rewrites it per module type while
injecting and saves the last value): when a base is given, every module's ΔW shape is checked
against its base weight and a disagreement is refused, never transposed to fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spectra.errors import (
    AdapterConfigError,
    CheckpointMismatchError,
    FileFormatError,
    UnsupportedFormatError,
)
from spectra.io import open_tensors
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.loaders.align import align_modules
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.loaders.detect import find_peft_files, peft_kind, read_adapter_config
from spectra.loaders.full import _matrices
from spectra.loaders.lora_scaling import lora_scaling, pattern_key, scaling_rule_text
from spectra.update import Kind, ModuleUpdate

PEFT_PREFIX = "base_model.model."

# <module>.<role>; roles as PEFT saves them (peft.utils.save_and_load).
_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<role>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A"
    r"|lora_embedding_B|lora_magnitude_vector)$"
)

Layout = Literal["linear", "conv1d", "embedding", "conv"]
_LAYOUT_TEXT: dict[Layout, str] = {
    "linear": "nn.Linear (out, in): ΔW = s·B·A",
    "conv1d": "Conv1D, fan_in_fan_out (in, out): ΔW = s·(B·A)ᵀ as stored; left vectors are input-side",
    "embedding": "nn.Embedding (num_embeddings, dim): ΔW = s·(B·A)ᵀ as stored",
    "conv": "conv kernel flattened to (out, in·kh·kw): ΔW = s·B·A",
}


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
    """

    r: int
    lora_alpha: float
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    target_modules: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    base_model_name_or_path: str | None = None

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
        return cls(
            r=_positive_int(raw.get("r"), "r", path),
            lora_alpha=_number(raw.get("lora_alpha"), "lora_alpha", path),
            use_rslora=_flag(raw, "use_rslora", path),
            fan_in_fan_out=_flag(raw, "fan_in_fan_out", path),
            target_modules=sorted(targets) if isinstance(targets, list) else targets,
            rank_pattern=_pattern(raw, "rank_pattern", path, _positive_int),
            alpha_pattern=_pattern(raw, "alpha_pattern", path, _number),
            base_model_name_or_path=None if base_name is None else str(base_name),
        )

    def rank_for(self, module: str) -> tuple[int, str]:
        """(r, where it came from) for a module, by PEFT's pattern rule."""
        key = pattern_key(module, list(self.rank_pattern))
        if key is None:
            return self.r, "field 'r'"
        return self.rank_pattern[key], f"rank_pattern key {key!r}"

    def alpha_for(self, module: str) -> float:
        """α for a module, by PEFT's pattern rule."""
        key = pattern_key(module, list(self.alpha_pattern))
        return self.lora_alpha if key is None else self.alpha_pattern[key]

    def as_dict(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "use_rslora": self.use_rslora,
            "fan_in_fan_out": self.fan_in_fan_out,
            "target_modules": self.target_modules,
            "rank_pattern": dict(self.rank_pattern),
            "alpha_pattern": dict(self.alpha_pattern),
            "base_model_name_or_path": self.base_model_name_or_path,
        }


@dataclass(frozen=True)
class _Pair:
    """One adapted module as found in the file: its keys, layout, rank and scaling."""

    name: str  # module path in the adapter, PEFT prefix removed
    key_a: str
    key_b: str
    key_bias: str | None
    layout: Layout
    r: int
    alpha: float
    scaling: float
    shape: tuple[int, int]  # ΔW in the stored layout of the base weight


class PeftLoraReader:
    """A PEFT LoRA adapter (implements CheckpointReader, kind ``"lora"``).

    Only the config, key names and shapes are read on construction; :meth:`update` reads the
    two factors of one module. Updates stay factored: ΔW = left @ right with s folded into
    ``left`` after widening (see the module docstring for the layouts).

    Args:
        path: The adapter directory, or its ``adapter_config.json`` /
            ``adapter_model.safetensors`` / ``adapter_model.bin`` (the other is found beside it).
        base: The base model's tensors; when given, module names are mapped to base names
            (:func:`align_to_base`) and ΔW shapes are checked against the base weights.
        options: ``dtype`` is the compute dtype (float32 or float64).

    Attributes:
        path, kind, config, report: See :class:`~spectra.loaders.base.CheckpointReader`.
        weights_path: The adapter weights file read.
    """

    kind: Kind = "lora"

    def __init__(
        self,
        path: str | Path,
        *,
        base: TensorSource | None = None,
        options: LoadOptions = LoadOptions(),
    ):
        self.path = Path(path)
        self._options = options
        found = find_peft_files(self.path)
        if found is None:
            raise FileFormatError(
                "no adapter_config.json here or beside this file; pass a PEFT adapter directory",
                path=self.path,
            )
        config_path, self.weights_path = found
        raw = read_adapter_config(config_path)
        peft_kind(raw, config_path)  # refuses DoRA, variants, base-changing inits, non-LoRA
        self._cfg = PeftLoraConfig.from_json(raw, config_path)
        self.config: dict[str, Any] = self._cfg.as_dict()
        self._source = open_tensors(self.weights_path)
        self.report = LoadReport()
        pairs = [self._pair(m, roles) for m, roles in sorted(self._collect().items())]
        names = {p.name: p.shape for p in pairs}
        hints = {p.name: _fan_in_fan_out_hint(p) for p in pairs if p.layout in ("linear", "conv1d")}
        mapping = align_to_base(
            names, base, path=self.weights_path, report=self.report, hints=hints
        )
        self._pairs = {mapping[p.name]: p for p in pairs}

    def modules(self) -> list[ModuleInfo]:
        """Every adapted module, sorted by (base) module name."""
        return [self._info(name, p) for name, p in sorted(self._pairs.items())]

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module, factored, in ``options.dtype``.

        linear/conv: left = s·B (out, r), right = A (r, in[·kh·kw]);
        conv1d/embedding: left = s·Aᵀ (in | num_emb, r), right = Bᵀ (r, out | dim).
        Each factor is widened to ``options.dtype`` before s multiplies it.

        Raises:
            MissingTensorError: ``module`` is not listed by :meth:`modules`.
        """
        if module not in self._pairs:
            raise missing_key(module, self.weights_path, sorted(self._pairs))
        p = self._pairs[module]
        dtype = self._options.dtype
        a = self._source.get(p.key_a).to(dtype)  # (r, in) | (r, n_emb) | (r, in, kh, kw)
        b = self._source.get(p.key_b).to(dtype)  # (out, r) | (dim, r) | (out, r, 1, 1)
        if p.layout in ("conv1d", "embedding"):
            left = (p.scaling * a.T).contiguous()  # (in, r) | (n_emb, r)
            right = b.T.contiguous()  # (r, out) | (r, dim)
        else:
            left = p.scaling * b.reshape(b.shape[0], p.r)  # (out, r)
            right = a.reshape(p.r, -1)  # (r, in) | (r, in·kh·kw)
        notes = self._notes(p)
        return ModuleUpdate(module=module, shape=p.shape, left=left, right=right, notes=notes)

    def _collect(self) -> dict[str, dict[str, str]]:
        """Adapter keys grouped by module: {module: {role: key}}; other keys go to the report."""
        found: dict[str, dict[str, str]] = {}
        others: list[str] = []
        all_keys = self._source.keys()
        for key in all_keys:
            m = _KEY.match(key.removeprefix(PEFT_PREFIX))
            if m:
                found.setdefault(m["module"], {})[m["role"]] = key
            elif len(self._source.shape(key)) == 1:
                self.report.skipped_1d.append(key)
            else:
                others.append(key)
        if others:
            self.report.notes.append(
                f"{len(others)} tensors are not LoRA factors (e.g. modules_to_save weights, "
                f"trainable tokens) and are not analysed, e.g. {others[0]!r}"
            )
        if not found:
            raise AdapterConfigError(
                "no LoRA factors (*.lora_A.weight / *.lora_B.weight / *.lora_embedding_A/B) in "
                "the adapter weights; check that this is the adapter you meant",
                path=self.weights_path,
            )
        return found

    def _pair(self, module: str, roles: dict[str, str]) -> _Pair:
        """Validate one module's keys and shapes against each other and the config."""
        if "lora_magnitude_vector" in roles:
            raise AdapterConfigError(
                "a DoRA magnitude vector is stored but the config has no use_dora: true; the "
                "config does not belong to these weights",
                path=self.weights_path,
                key=roles["lora_magnitude_vector"],
            )
        emb = "lora_embedding_A" in roles or "lora_embedding_B" in roles
        role_a, role_b = (
            ("lora_embedding_A", "lora_embedding_B") if emb else ("lora_A.weight", "lora_B.weight")
        )
        missing = [role for role in (role_a, role_b) if role not in roles]
        mixed = emb and ("lora_A.weight" in roles or "lora_B.weight" in roles)
        if missing or mixed:
            what = f"no {' and no '.join(map(repr, missing))}" if missing else "both layouts"
            raise AdapterConfigError(
                f"module {module!r} has {sorted(roles.values())} but {what}: each LoRA module "
                "needs one lora_A and one lora_B; the adapter file is incomplete, save it again",
                path=self.weights_path,
                key=module,
            )
        key_a, key_b = roles[role_a], roles[role_b]
        for key in (key_a, key_b):
            if not self._source.dtype(key).is_floating_point:
                raise UnsupportedFormatError(
                    f"stored as {self._source.dtype(key)}: quantized adapters are not read; "
                    "dequantize and save in float first",
                    path=self.weights_path,
                    key=key,
                )
        layout, r, shape = self._shapes(module, key_a, key_b, emb)
        self._check_rank(module, key_a, r)
        alpha = self._cfg.alpha_for(module)
        scaling = lora_scaling(alpha, r, use_rslora=self._cfg.use_rslora)
        bias = roles.get("lora_B.bias")
        return _Pair(module, key_a, key_b, bias, layout, r, alpha, scaling, shape)

    def _shapes(
        self, module: str, key_a: str, key_b: str, emb: bool
    ) -> tuple[Layout, int, tuple[int, int]]:
        """(layout, r, ΔW shape in the stored layout) from the factor shapes alone."""
        a, b = self._source.shape(key_a), self._source.shape(key_b)
        r = a[0] if a else 0
        if len(a) == 2 and len(b) == 2 and b[1] == r:
            if emb:
                return "embedding", r, (a[1], b[0])  # (n_emb, dim)
            if self._cfg.fan_in_fan_out:
                return "conv1d", r, (a[1], b[0])  # (in, out)
            return "linear", r, (b[0], a[1])  # (out, in)
        conv_b = len(b) == len(a) and len(a) >= 3 and all(k == 1 for k in b[2:])
        if not emb and conv_b and b[1] == r:
            return "conv", r, (b[0], math.prod(a[1:]))  # (out, in·kh·kw)
        raise AdapterConfigError(
            f"factor shapes do not fit a LoRA module: {key_a!r} {tuple(a)}, {key_b!r} "
            f"{tuple(b)}; expected A (r, in) and B (out, r) with the same r (conv: A (r, in, "
            "kh, kw), B (out, r, 1, 1); grouped conv LoRA is not read)",
            path=self.weights_path,
            key=module,
        )

    def _check_rank(self, module: str, key_a: str, r: int) -> None:
        expected, source = self._cfg.rank_for(module)
        if r != expected:
            raise AdapterConfigError(
                f"{key_a!r} has rank {r} but adapter_config.json gives r = {expected} ({source}) "
                "for this module; the config does not belong to these weights",
                path=self.weights_path,
                key=module,
            )

    def _notes(self, p: _Pair) -> tuple[str, ...]:
        notes: list[str] = []
        if p.layout in ("conv1d", "embedding"):
            notes.append(f"layout: {_LAYOUT_TEXT[p.layout]}")
        if p.key_bias is not None:
            notes.append(
                f"{p.key_bias!r} is stored (lora_bias): the adapter also shifts this module's "
                "bias; ΔW covers the weight only"
            )
        return tuple(notes)

    def _info(self, name: str, p: _Pair) -> ModuleInfo:
        detail: dict[str, Any] = {
            "layout": _LAYOUT_TEXT[p.layout],
            "alpha": p.alpha,
            "stored_dtype": str(self._source.dtype(p.key_a)).removeprefix("torch."),
            "lora_B.bias": p.key_bias is not None,
        }
        if name != p.name:
            detail["adapter_module"] = p.name
        scaling = scaling_rule_text(p.alpha, p.r, use_rslora=self._cfg.use_rslora)
        return ModuleInfo(module=name, shape=p.shape, rank=p.r, scaling=scaling, detail=detail)


def align_to_base(
    shapes: Mapping[str, tuple[int, int]],
    base: TensorSource | None,
    *,
    path: Path,
    report: LoadReport,
    hints: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map adapter module names to base module names and check each ΔW shape against the base.

    Shared by the adapter readers (PEFT LoRA, MultiLoRA). Base modules are the keys
    :class:`~spectra.loaders.full.FullReader` treats as modules (floating ``*.weight`` with
    ndim ≥ 2, conv kernels flattened to (out, in·kh·kw)); names are aligned by
    :func:`~spectra.loaders.align.align_modules`.

    Args:
        shapes: Adapter module name → ΔW shape.
        base: The base model's tensors, or None (names are kept as they are).
        path: The adapter file, named in errors.
        report: Receives a note when names were matched by a differing prefix.
        hints: Extra text per module for a shape-mismatch error.

    Returns:
        Adapter module name → the name reported (the base name when a base is given).

    Raises:
        CheckpointMismatchError: A module has no base counterpart, or shapes differ.
    """
    if base is None:
        return {name: name for name in shapes}
    base_keys = {k.removesuffix(".weight"): k for k in _matrices(base, LoadReport(), record=False)}
    alignment = align_modules(shapes, base_keys, path=path, base_path=base.path)
    if alignment.unmatched:
        raise CheckpointMismatchError(
            f"{len(alignment.unmatched)} adapted modules have no weight in the base "
            f"({base.path}), e.g. {alignment.unmatched[0]!r}; pass the base model this adapter "
            "was trained on",
            path=path,
            key=alignment.unmatched[0],
        )
    if alignment.prefixed:
        name, base_name = next(iter(alignment.prefixed.items()))
        report.notes.append(
            f"{len(alignment.prefixed)} modules matched the base by a differing leading prefix, "
            f"e.g. {name!r} -> {base_name!r}"
        )
    for name, base_name in alignment.mapping.items():
        stored = base.shape(base_keys[base_name])
        flat = (stored[0], math.prod(stored[1:]))
        if flat != tuple(shapes[name]):
            raise CheckpointMismatchError(
                f"ΔW has shape {tuple(shapes[name])} but the base weight {base_keys[base_name]!r} "
                f"of {base.path} has shape {tuple(stored)}{(hints or {}).get(name, '')}; pass the "
                "base model this adapter was trained on",
                path=path,
                key=name,
            )
    return alignment.mapping


def _fan_in_fan_out_hint(p: _Pair) -> str:
    flag = "true" if p.layout == "conv1d" else "false"
    return (
        f" (adapter_config.json has fan_in_fan_out: {flag}; PEFT saves this one flag for all "
        "modules, so an adapter mixing Conv1D and nn.Linear targets cannot be read from files)"
    )


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
        out[key] = check(v, f"{name}[{key!r}]", path)
    return out
