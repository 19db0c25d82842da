"""LoRA factor pairs in one tensor file: what PEFT adapters, DoRA adapters and plain LoRA state
dicts share. :class:`LoraFileReader` is the reader and forms ΔW (LoRA, DoRA, saved modules);
its subclasses only say where the scaling rule (:class:`~spectra.loaders.lora_scaling.LoraRule`)
comes from. Which key is which factor is parsed in :mod:`spectra.loaders.lora_keys`; the text
``spectra inspect`` shows is written in :mod:`spectra.loaders.lora_describe`.

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

from pathlib import Path
from typing import Any

import torch

from spectra.errors import AdapterConfigError, AmbiguousInputError, UnsupportedFormatError
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream
from spectra.loaders.align import align_to_base, flat_shape
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.loaders.dora import dora_delta
from spectra.loaders.lora_describe import (
    fan_in_fan_out_hint,
    lora_info,
    saved_info,
    unused_pattern_notes,
    update_notes,
)
from spectra.loaders.lora_keys import LoraModule, lora_module, sort_keys, uses_dora
from spectra.loaders.lora_scaling import LoraRule
from spectra.loaders.modules_to_save import weight_difference
from spectra.update import Kind, ModuleUpdate


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
            ``kind`` is ``"dora"`` when the rule says ``use_dora`` (or, when it does not say,
            the file stores DoRA magnitudes), else ``"lora"``.
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
        self._source, self._rule, self._base, self._options = source, rule, base, options
        self.report = LoadReport()
        keys = sort_keys(source, rule, self.report)
        use_dora = uses_dora(rule, keys)
        self.kind: Kind = "dora" if use_dora else "lora"
        self._refuse_forced_kind(options.kind)
        self.config: dict[str, Any] = {"scaling_from": rule.source}
        self._note_unused_options(options)
        self._check_adapters(keys.adapters)
        if keys.others:
            self.report.notes.append(
                f"{len(keys.others)} tensors are neither LoRA factors nor modules_to_save (e.g. "
                "base weights stored beside the factors, trainable tokens) and are not analysed, "
                f"e.g. {keys.others[0]!r}"
            )
        if not keys.factors and not keys.saved:
            raise AdapterConfigError(
                "no LoRA factors (*.lora_A.weight / *.lora_B.weight / *.lora_embedding_A/B, or "
                "loralib's *.lora_A / *.lora_B) in this file; check that this is the adapter "
                "you meant",
                path=weights_path,
            )
        saved = keys.saved
        pairs = [
            lora_module(source, rule, m, roles, path=weights_path, use_dora=use_dora)
            for m, roles in sorted(keys.factors.items())
        ]
        self.report.notes += unused_pattern_notes(rule, [p.name for p in pairs])
        shapes = {p.name: p.shape for p in pairs}
        shapes.update({name: flat_shape(source.shape(key)) for name, key in saved.items()})
        hints = {p.name: fan_in_fan_out_hint(p) for p in pairs if p.layout != "embedding"}
        mapping = align_to_base(
            shapes,
            base,
            path=weights_path,
            report=self.report,
            hints=hints,
            skip_mismatched=options.skip_mismatched,
        )
        self._pairs = {mapping[p.name]: p for p in pairs if p.name in mapping}
        self._saved = {mapping[n]: (n, key) for n, key in saved.items() if n in mapping}

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
            module=module, shape=p.shape, left=left, right=right, notes=update_notes(p)
        )
        return lora if p.key_magnitude is None else self._dora_update(module, p, lora)

    # --- DoRA and saved modules (dense, need the base) -----------------------------------------

    def _dora_update(self, module: str, p: LoraModule, lora: ModuleUpdate) -> ModuleUpdate:
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
                "with --base BASE (or BASE first: spectra compare BASE CKPT…)",
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

    def _check_adapters(self, adapters: frozenset[str]) -> None:
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

    def _info(self, name: str, p: LoraModule) -> ModuleInfo:
        stored_dtype = str(self._source.dtype(p.key_a)).removeprefix("torch.")
        return lora_info(name, p, stored_dtype=stored_dtype, has_base=self._base is not None)

    def _saved_info(self, name: str) -> ModuleInfo:
        file_name, key = self._saved[name]
        stored = tuple(self._source.shape(key))
        return saved_info(
            name,
            file_name=file_name,
            key=key,
            stored=stored,
            shape=flat_shape(stored),
            stored_dtype=str(self._source.dtype(key)).removeprefix("torch."),
            has_base=self._base is not None,
        )
