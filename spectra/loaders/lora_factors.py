"""LoRA factor pairs in one tensor file: what PEFT adapters, DoRA adapters and plain LoRA state
dicts share. :class:`LoraFileReader` is the reader; its subclasses only say where the scaling
rule (:class:`~spectra.loaders.lora_scaling.LoraRule`) comes from.

Keys (a leading ``base_model.model.`` is stripped; ``.<a>`` is an adapter name, present in a
raw ``PeftModel.state_dict()`` only: PEFT's ``save_pretrained`` strips it):

=============================================  ========================  =============================
key                                            shape                     ΔW (stored layout of weight)
=============================================  ========================  =============================
``<m>.lora_A[.<a>].weight``, ``lora_B…``       (r, in), (out, r)         s · B A               (out, in)
``<m>.lora_A``, ``<m>.lora_B`` (loralib)       (r, in), (out, r)         s · B A               (out, in)
  either, ``fan_in_fan_out``                   (r, in), (out, r)         s · (B A)ᵀ            (in, out)
``<m>.lora_embedding_A[.<a>]``, ``_B``         (r, n_emb), (d, r)        s · (B A)ᵀ            (n_emb, d)
conv: ``lora_A`` / ``lora_B``                  (r, in, kh, kw),          s · B A flattened to
                                               (out, r, 1, 1)            (out, in·kh·kw)
``<m>.lora_B[.<a>].bias``                      (out,)                    not part of ΔW (in notes)
``<m>.lora_magnitude_vector[.<a>.weight]``     (out,) or (1, out, 1, 1)  DoRA (:mod:`.dora`), dense
``<m>.weight``, m in ``modules_to_save``       as the base weight        saved − W0, dense
``<m>.modules_to_save.<a>.weight``             as the base weight        saved − W0, dense
=============================================  ========================  =============================

**choice: ΔW is reported in the layout the base weight is stored in**, so that it equals
``merge_and_unload()``'s weight minus the base weight key for key, and can be compared with a
full fine-tune of the same model (whose ΔW = W_tuned − W_base is necessarily in the stored
layout). For ``nn.Linear`` and conv this is the (out, in) layout (a conv kernel flattened to
(out, in·kh·kw), the layout of :mod:`spectra.loaders.full`); for GPT-2's ``Conv1D``
(``fan_in_fan_out``) and for ``nn.Embedding`` it is the transpose, (in, out) and
(num_embeddings, dim): there the *left* singular vectors of ΔW are on the input side. Each such
module says so in ``ModuleUpdate.notes`` and ``ModuleInfo.detail["layout"]``.

``fan_in_fan_out`` is one flag for the whole file (PEFT rewrites it per module type while
injecting and saves the last value): when a base is given, every module's ΔW shape is checked
against its base weight and a disagreement is refused, never transposed to fit. loralib's
``Embedding`` stores its factors under ``lora_A`` / ``lora_B`` like a Linear, so its ΔW shape is
the transpose of the base weight's and it is refused the same way (a documented limit).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from spectra.errors import AdapterConfigError, AmbiguousInputError, UnsupportedFormatError
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.loaders.align import align_to_base, flat_shape
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.loaders.dora import dora_delta
from spectra.loaders.lora_scaling import LoraRule, pattern_key
from spectra.loaders.modules_to_save import weight_difference
from spectra.loaders.stream import TensorStream
from spectra.update import Kind, ModuleUpdate

PEFT_PREFIX = "base_model.model."

_FACTOR = re.compile(
    r"^(?P<module>.+?)\.(?P<role>lora_A|lora_B|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector)(?P<tail>(?:\.[^.]+){0,2})$"
)
_SAVED_RAW = re.compile(
    r"^(?P<module>.+)\.modules_to_save\.(?P<adapter>[^.]+)\.(?:(?P<sub>.+)\.)?weight$"
)
_NOT_SAVED = (".original_module.", ".base_layer.")  # base weights in a raw PeftModel state dict

Layout = Literal["linear", "conv1d", "embedding", "conv"]
LAYOUT_TEXT: dict[Layout, str] = {
    "linear": "nn.Linear (out, in): ΔW = s·B·A",
    "conv1d": "Conv1D, fan_in_fan_out (in, out): ΔW = s·(B·A)ᵀ as stored; left vectors are input-side",
    "embedding": "nn.Embedding (num_embeddings, dim): ΔW = s·(B·A)ᵀ as stored",
    "conv": "conv kernel flattened to (out, in·kh·kw): ΔW = s·B·A",
}
_SAVED_TEXT = "dense: W_saved - W_base (modules_to_save)"


@dataclass(frozen=True)
class _Pair:
    """One adapted module as found in the file: its keys, layout, rank and scaling."""

    name: str  # module path in the file, PEFT prefix removed
    key_a: str
    key_b: str
    key_bias: str | None
    key_magnitude: str | None  # DoRA
    layout: Layout
    r: int
    alpha: float | None
    scaling: float
    scaling_text: str
    shape: tuple[int, int]  # ΔW in the stored layout of the base weight


@dataclass(frozen=True)
class _Role:
    module: str
    role: str  # "A" | "B" | "bias" | "m"
    embedding: bool
    adapter: str | None


class LoraFileReader:
    """LoRA (or DoRA) modules, plus any ``modules_to_save``, of one tensor file (implements
    CheckpointReader).

    Only key names and shapes are read on construction; :meth:`update` reads one module's
    tensors. LoRA updates stay factored: ΔW = left @ right with s folded into ``left`` after
    widening. DoRA and saved modules are dense and need the base (refused at :meth:`update`
    when no base was given, so that they can still be listed).

    Args:
        path: What the user passed.
        source: The opened tensor file.
        weights_path: The tensor file, named in errors.
        rule: Scaling and layout rule for every module.
        base: The base model's tensors; when given, module names are mapped to base names and
            ΔW shapes checked against the base weights (:func:`~spectra.loaders.align.align_to_base`).
        options: ``dtype`` is the compute dtype; ``kind`` a kind the user forced.

    Attributes:
        path, kind, config, report: See :class:`~spectra.loaders.base.CheckpointReader`;
            ``kind`` is ``"dora"`` when the rule says ``use_dora``, else ``"lora"``.
        weights_path: The tensor file read.
    """

    def __init__(
        self,
        path: Path,
        *,
        source: TensorSource,
        weights_path: Path,
        rule: LoraRule,
        base: TensorSource | None,
        options: LoadOptions,
    ):
        self.path = path
        self.weights_path = weights_path
        self.kind: Kind = "dora" if rule.use_dora else "lora"
        self._refuse_forced_kind(options.kind)
        self._source, self._rule, self._base, self._options = source, rule, base, options
        self.report = LoadReport()
        self.config: dict[str, Any] = {"scaling_from": rule.source}
        self._note_unused_options(options)
        groups, saved = self._collect()
        pairs = [self._pair(m, roles) for m, roles in sorted(groups.items())]
        self.report.notes += unused_pattern_notes(rule, [p.name for p in pairs])
        shapes = {p.name: p.shape for p in pairs}
        shapes.update({name: flat_shape(source.shape(key)) for name, key in saved.items()})
        hints = {p.name: _fan_in_fan_out_hint(p) for p in pairs if p.layout != "embedding"}
        mapping = align_to_base(shapes, base, path=weights_path, report=self.report, hints=hints)
        self._pairs = {mapping[p.name]: p for p in pairs}
        self._saved = {mapping[name]: (name, key) for name, key in saved.items()}

    def modules(self) -> list[ModuleInfo]:
        """Every adapted or saved module, sorted by (base) module name."""
        infos = [self._info(name, p) for name, p in self._pairs.items()]
        infos += [self._saved_info(name) for name in self._saved]
        return sorted(infos, key=lambda i: i.module)

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module, in ``options.dtype``.

        LoRA, factored: linear/conv: left = s·B (out, r), right = A (r, in[·kh·kw]);
        conv1d/embedding: left = s·Aᵀ (in | n_emb, r), right = Bᵀ (r, out | dim). Each factor
        is widened before s multiplies it. DoRA: dense, :func:`~spectra.loaders.dora.dora_delta`.
        Saved modules: dense, W_saved − W_base.

        Raises:
            MissingTensorError: ``module`` is not listed by :meth:`modules`.
            AmbiguousInputError: A DoRA or saved module and no base was given.
        """
        if module in self._saved:
            return self._saved_update(module)
        if module not in self._pairs:
            raise missing_key(module, self.weights_path, sorted(self._pairs) + sorted(self._saved))
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
        lora = ModuleUpdate(
            module=module, shape=p.shape, left=left, right=right, notes=self._notes(p)
        )
        return lora if p.key_magnitude is None else self._dora_update(module, p, lora)

    # --- DoRA and saved modules (dense, need the base) -----------------------------------------

    def _dora_update(self, module: str, p: _Pair, lora: ModuleUpdate) -> ModuleUpdate:
        assert p.key_magnitude is not None
        w0 = self._base_weight(module, "DoRA: ΔW = m ⊙ (W0 + s·B·A) / ‖W0 + s·B·A‖ − W0")
        magnitude = self._source.get(p.key_magnitude).to(self._options.dtype).reshape(-1)
        out_dim = 1 if p.layout in ("conv1d", "embedding") else 0  # which axis is the output
        if magnitude.numel() != p.shape[out_dim]:
            raise AdapterConfigError(
                f"the DoRA magnitude vector has {magnitude.numel()} entries but the module has "
                f"{p.shape[out_dim]} output channels; the file is inconsistent, save it again",
                path=self.weights_path,
                key=p.key_magnitude,
            )
        dense = dora_delta(w0, lora.materialize(), magnitude, out_dim=out_dim)
        notes = (*lora.notes, "DoRA: dense ΔW, computed with the base weight")
        return ModuleUpdate(module=module, shape=p.shape, dense=dense, notes=notes)

    def _saved_update(self, module: str) -> ModuleUpdate:
        _, key = self._saved[module]
        self._require_base(module, "modules_to_save: ΔW = W_saved − W_base")
        assert self._base is not None
        dense = weight_difference(
            self._source, key, self._base, f"{module}.weight", self._options.dtype
        )
        return ModuleUpdate(module=module, shape=(dense.shape[0], dense.shape[1]), dense=dense)

    def _base_weight(self, module: str, why: str) -> torch.Tensor:
        """W0 of a module, widened, flattened to (out, in·kh·kw) in its stored layout."""
        self._require_base(module, why)
        assert self._base is not None
        w0 = TensorStream(self._base).widened(f"{module}.weight", self._options.dtype)
        return w0.reshape(w0.shape[0], -1)  # (out, in·kh·kw) | (in, out) | (n_emb, dim)

    def _require_base(self, module: str, why: str) -> None:
        if self._base is None:
            raise AmbiguousInputError(
                f"{why}, so this module's ΔW needs BASE; pass the base model "
                "(spectra compare BASE CKPT…, or --base for inspect/diagnose)",
                path=self.weights_path,
                key=module,
            )

    # --- reading the keys ----------------------------------------------------------------------

    def _collect(self) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """({module: {role: key}}, {saved module: key}); other keys go to the report.

        Roles: ``A``, ``B`` (``A~``/``B~`` for the embedding layout), ``bias``, ``m``.
        """
        groups: dict[str, dict[str, str]] = {}
        saved: dict[str, str] = {}
        others: list[str] = []
        adapters: set[str] = set()
        keys = self._source.keys()  # TensorSource is not iterable
        for key in keys:
            name = key.removeprefix(PEFT_PREFIX)
            role = _parse_factor(name)
            if role is not None:
                tag = role.role + ("~" if role.embedding else "")
                groups.setdefault(role.module, {})[tag] = key
                adapters.update([role.adapter] if role.adapter else [])
            elif (module := self._saved_module(name, key, adapters)) is not None:
                saved[module] = key
            elif len(self._source.shape(key)) == 1:
                self.report.skipped_1d.append(key)
            else:
                others.append(key)
        self._check_adapters(adapters)
        if others:
            self.report.notes.append(
                f"{len(others)} tensors are neither LoRA factors nor modules_to_save (e.g. base "
                f"weights stored beside the factors, trainable tokens) and are not analysed, "
                f"e.g. {others[0]!r}"
            )
        if not groups and not saved:
            raise AdapterConfigError(
                "no LoRA factors (*.lora_A.weight / *.lora_B.weight / *.lora_embedding_A/B, or "
                "loralib's *.lora_A / *.lora_B) in this file; check that this is the adapter "
                "you meant",
                path=self.weights_path,
            )
        return groups, saved

    def _saved_module(self, name: str, key: str, adapters: set[str]) -> str | None:
        """The module name when ``key`` is a whole saved module (modules_to_save), else None."""
        shape, dtype = self._source.shape(key), self._source.dtype(key)
        if len(shape) < 2 or not dtype.is_floating_point:
            return None
        raw = _SAVED_RAW.match(name)
        if raw:
            adapters.add(raw["adapter"])
            return raw["module"] + (f".{raw['sub']}" if raw["sub"] else "")
        module = name.removesuffix(".weight")
        dotted = f".{module}."
        if not name.endswith(".weight") or any(w in dotted for w in _NOT_SAVED):
            return None
        # PEFT wraps the module named in modules_to_save; a head with sub-layers saves
        # <name>.<sub>.weight, so the name may be any dotted run of components of the key.
        listed = self._rule.modules_to_save
        return module if any(f".{t}." in dotted for t in listed) else None

    def _check_adapters(self, adapters: set[str]) -> None:
        if len(adapters) > 1:
            raise AdapterConfigError(
                f"this state dict holds several adapters ({', '.join(sorted(adapters))}); "
                "save one adapter (PEFT's get_peft_model_state_dict(model, adapter_name=...))",
                path=self.weights_path,
            )
        if adapters:
            self.report.notes.append(
                f"read adapter {next(iter(adapters))!r} from a raw PeftModel state dict"
            )

    def _pair(self, module: str, roles: dict[str, str]) -> _Pair:
        """Validate one module's keys and shapes against each other and the rule."""
        emb = "A~" in roles or "B~" in roles
        tags, names = (("A~", "B~"), ("lora_embedding_A", "lora_embedding_B"))
        if not emb:
            tags, names = ("A", "B"), ("lora_A.weight", "lora_B.weight")
        missing = [n for tag, n in zip(tags, names, strict=True) if tag not in roles]
        mixed = emb and ("A" in roles or "B" in roles)
        if missing or mixed:
            what = f"no {' and no '.join(map(repr, missing))}" if missing else "both layouts"
            raise AdapterConfigError(
                f"module {module!r} has {sorted(roles.values())} but {what}: each LoRA module "
                "needs one lora_A and one lora_B; the adapter file is incomplete, save it again",
                path=self.weights_path,
                key=module,
            )
        self._check_magnitude(module, roles.get("m"))
        key_a, key_b = roles[tags[0]], roles[tags[1]]
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
        s, alpha, text = self._rule.scaling(module, r)
        return _Pair(
            module,
            key_a,
            key_b,
            roles.get("bias"),
            roles.get("m"),
            layout,
            r,
            alpha,
            s,
            text,
            shape,
        )

    def _check_magnitude(self, module: str, key: str | None) -> None:
        if key is not None and not self._rule.use_dora:
            raise AdapterConfigError(
                f"a DoRA magnitude vector is stored but the {self._rule.source} has no "
                "use_dora: true; the config does not belong to these weights",
                path=self.weights_path,
                key=key,
            )
        if key is None and self._rule.use_dora:
            raise AdapterConfigError(
                f"the {self._rule.source} says use_dora: true but module {module!r} has no "
                "lora_magnitude_vector; the config does not belong to these weights",
                path=self.weights_path,
                key=module,
            )

    def _shapes(
        self, module: str, key_a: str, key_b: str, emb: bool
    ) -> tuple[Layout, int, tuple[int, int]]:
        """(layout, r, ΔW shape in the stored layout) from the factor shapes alone."""
        a, b = self._source.shape(key_a), self._source.shape(key_b)
        r = a[0] if a else 0
        if len(a) == 2 and len(b) == 2 and b[1] == r:
            if emb:
                return "embedding", r, (a[1], b[0])  # (n_emb, dim)
            if self._rule.fan_in_fan_out:
                return "conv1d", r, (a[1], b[0])  # (in, out)
            return "linear", r, (b[0], a[1])  # (out, in)
        conv_b = len(b) == len(a) and len(a) >= 3 and all(k == 1 for k in b[2:])
        if not emb and conv_b and b[1] == r:
            return "conv", r, (b[0], math.prod(a[1:]))  # (out, in·kh·kw)
        raise AdapterConfigError(
            f"factor shapes do not fit a LoRA module: {key_a!r} {tuple(a)}, {key_b!r} "
            f"{tuple(b)}; expected A (r, in) and B (out, r) with the same r (conv: A (r, in, "
            "kh, kw), B (out, r, 1, 1); grouped conv LoRA and loralib's MergedLinear / ConvLoRA "
            "are not read)",
            path=self.weights_path,
            key=module,
        )

    def _check_rank(self, module: str, key_a: str, r: int) -> None:
        expected, source = self._rule.rank_for(module)
        if expected is not None and r != expected:
            raise AdapterConfigError(
                f"{key_a!r} has rank {r} but the {source} gives r = {expected} for this module; "
                "the config does not belong to these weights",
                path=self.weights_path,
                key=module,
            )

    # --- what the user sees --------------------------------------------------------------------

    def _refuse_forced_kind(self, forced: Kind | None) -> None:
        if forced is not None and forced != self.kind:
            raise UnsupportedFormatError(
                f"--kind {forced} was forced but this adapter is {self.kind!r} "
                f"({'use_dora: true' if self.kind == 'dora' else 'no use_dora'}); reading it as "
                f"{forced!r} would give a wrong ΔW: drop --kind (or pass 'auto')",
                path=self.path,
            )

    def _note_unused_options(self, options: LoadOptions) -> None:
        given = [
            f"{flag} {value:g}"
            for flag, value in (
                ("--lora-alpha", options.lora_alpha),
                ("--lora-scale", options.lora_scale),
            )
            if value is not None and flag != self._rule.source
        ]
        if given:
            self.report.notes.append(
                f"{' and '.join(given)} not used: the scaling comes from the {self._rule.source}"
            )

    def _notes(self, p: _Pair) -> tuple[str, ...]:
        notes: list[str] = []
        if p.layout in ("conv1d", "embedding"):
            notes.append(f"layout: {LAYOUT_TEXT[p.layout]}")
        if p.key_bias is not None:
            notes.append(
                f"{p.key_bias!r} is stored (lora_bias): the adapter also shifts this module's "
                "bias; ΔW covers the weight only"
            )
        return tuple(notes)

    def _info(self, name: str, p: _Pair) -> ModuleInfo:
        dora = p.key_magnitude is not None
        detail: dict[str, Any] = {
            "layout": LAYOUT_TEXT[p.layout],
            "alpha": p.alpha,
            "r": p.r,
            "stored_dtype": str(self._source.dtype(p.key_a)).removeprefix("torch."),
            "lora_B.bias": p.key_bias is not None,
            "structure": (
                f"DoRA: dense, m ⊙ (W0 + sBA)/‖·‖ − W0{'' if self._base else ' (needs BASE)'}"
                if dora
                else f"LoRA: factored, rank ≤ r = {p.r}"
            ),
        }
        if name != p.name:
            detail["adapter_module"] = p.name
        scaling = p.scaling_text + (", then the DoRA magnitude m" if dora else "")
        rank = None if dora else p.r
        return ModuleInfo(module=name, shape=p.shape, rank=rank, scaling=scaling, detail=detail)

    def _saved_info(self, name: str) -> ModuleInfo:
        file_name, key = self._saved[name]
        stored = self._source.shape(key)
        detail: dict[str, Any] = {
            "saved_key": key,
            "stored_dtype": str(self._source.dtype(key)).removeprefix("torch."),
            "structure": f"modules_to_save: dense, saved − W0{'' if self._base else ' (needs BASE)'}",
        }
        if len(stored) > 2:
            detail["stored_shape"] = list(stored)
        if name != file_name:
            detail["adapter_module"] = file_name
        return ModuleInfo(
            module=name, shape=flat_shape(stored), rank=None, scaling=_SAVED_TEXT, detail=detail
        )


def _parse_factor(name: str) -> _Role | None:
    """The module, role and adapter name of a LoRA factor key, or None (see the module
    docstring for the accepted forms)."""
    m = _FACTOR.match(name)
    if m is None:
        return None
    parts = m["tail"].split(".")[1:]  # [], [param], [adapter], [adapter, param]
    param = parts[-1] if parts and parts[-1] in ("weight", "bias") else None
    adapter = parts[0] if len(parts) == (2 if param else 1) else None
    if len(parts) == 2 and param is None:
        return None
    role, emb = m["role"], m["role"].startswith("lora_embedding")
    if role in ("lora_A", "lora_embedding_A") and param in (None, "weight") and not (emb and param):
        return _Role(m["module"], "A", emb, adapter)
    if role in ("lora_B", "lora_embedding_B") and param in (None, "weight") and not (emb and param):
        return _Role(m["module"], "B", emb, adapter)
    if role == "lora_B" and param == "bias":
        return _Role(m["module"], "bias", False, adapter)
    if role == "lora_magnitude_vector" and param in (None, "weight"):
        return _Role(m["module"], "m", False, adapter)
    return None


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


def _fan_in_fan_out_hint(p: _Pair) -> str:
    flag = "true" if p.layout == "conv1d" else "false"
    return (
        f" (the file says fan_in_fan_out: {flag}; PEFT saves this one flag for all modules, so "
        "an adapter mixing Conv1D and nn.Linear targets cannot be read from files; loralib's "
        "nn.Embedding LoRA is stored like a Linear and is not read either)"
    )
