"""kohya / sd-scripts LoRA and LyCORIS (LoCon, LoHa, LoKr, full) files: one module per
flattened name, each with its own algorithm.

Keys are ``<name>.<param>`` with ``<name>`` a kohya name (:mod:`spectra.loaders.kohya_names`).
What each module holds decides what it is:

=========================================  ======================================  ============
params                                     ΔW (out, in·kh·kw)                       structure
=========================================  ======================================  ============
``lora_down.weight`` (r, in[, kh, kw]),    s · up · down, s = alpha / r             factored,
``lora_up.weight`` (out, r[, 1, 1]),       (missing or zero alpha: alpha = r;       rank ≤ r
``alpha`` (scalar)                         sd-scripts ``networks/lora.py``)
``hada_w1_a`` … ``hada_w2_b``, ``alpha``   LoHa (:mod:`spectra.loaders.lycoris`)    dense
``lokr_w1[_a/_b]``, ``lokr_w2[_a/_b]``     LoKr (:mod:`spectra.loaders.lycoris`)    dense
``diff`` (out, in[, kh, kw])               ΔW itself (LyCORIS ``full``)             dense
=========================================  ======================================  ============

A conv ``lora_down`` (r, in, kh, kw) is read as (r, in·kh·kw) and a 1×1 ``lora_up`` as
(out, r): ΔW is the kernel update flattened to (out, in·kh·kw), the layout of every other
reader. Refused, naming the key: Tucker / CP factors (``lora_mid``, ``hada_t1``, ``lokr_t2``),
the multiplicative or other methods LyCORIS also writes (OFT / BOFT ``oft_*``, IA³, GLoRA).
Biases (``diff_b``, 1-D) are listed as skipped.

Weight decomposition (DoRA; LyCORIS ``weight_decompose`` / ``dora_wd``, OneTrainer): a
module's ``dora_scale`` is the magnitude m, and ΔW = m ⊙ V / ‖V‖ − W0 with V = W0 + ΔW_inner
(ΔW_inner the module's LoRA / LoHa / LoKr / full update above), dense and computed with the
base weight (:func:`spectra.loaders.dora.weight_decomposed_delta`). Which channels m and ‖V‖
run over is the stored layout of ``dora_scale`` (:func:`spectra.loaders.dora.dora_scale_axis`):
(1, in[, 1, 1]) per input channel (the LyCORIS / OneTrainer default), (out, 1[, 1, 1]) per
output channel (LyCORIS ``wd_on_out``).

With a base, names are mapped to base module paths and shapes checked; without one the kohya
names are kept (and the report says so). ``kind`` is ``"loha"`` or ``"lokr"`` when every module
is of that algorithm, else ``"kohya"``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from spectra.errors import AdapterConfigError, AmbiguousInputError, UnsupportedFormatError
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream
from spectra.loaders.align import base_modules, flat_shape
from spectra.loaders.base import FileReader, LoadOptions, ModuleInfo
from spectra.loaders.dora import MagnitudeAxis, weight_decomposed_delta
from spectra.loaders.kohya_modules import Algo, KohyaModule, KohyaModules
from spectra.loaders.kohya_names import map_kohya_names
from spectra.loaders.lycoris import LOHA_KEYS, loha_delta, lokr_delta
from spectra.update import Kind, ModuleUpdate

_SS_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
            "ss_base_model_version", "ss_sd_model_name")  # fmt: skip
_STRUCTURE: dict[Algo, str] = {
    "lora": "LoRA: factored",
    "loha": "LoHa: dense (materialized)",
    "lokr": "LoKr: dense (materialized)",
    "full": "full diff: dense",
}


class KohyaReader(FileReader):
    """A kohya / LyCORIS file (implements CheckpointReader; kind ``kohya``, ``loha``, ``lokr``).

    Key names, shapes and the scalar ``alpha`` tensors are read on construction; :meth:`update`
    reads one module's factors.

    Args:
        path: A ``.safetensors`` (usual) or torch file.
        base: The base model's tensors (U-Net, text encoder, or any model); when given, names
            are mapped to its module paths (:func:`~spectra.loaders.kohya_names.map_kohya_names`).
        options: ``dtype`` is the compute dtype.

    Raises:
        UnsupportedFormatError: A module uses a decomposition spectra does not read.
        AdapterConfigError: A module's tensors are incomplete or their shapes do not fit.
    """

    def _list_modules(self, base: TensorSource | None, options: LoadOptions) -> None:
        parser = KohyaModules(self._source, self.path, self.report)
        found = [parser.module(n, params) for n, params in sorted(parser.collect().items())]
        modules = [m for m in found if m is not None]
        if not modules:
            raise AdapterConfigError(
                "no module with LoRA, LoHa, LoKr or full-diff tensors in this file",
                path=self.path,
            )
        parser.report_unused(modules)
        counts = Counter(m.algo for m in modules)
        self.kind: Kind = _kind(counts)
        if options.kind not in (None, "kohya", self.kind):
            raise UnsupportedFormatError(
                f"--kind {options.kind} was forced but this file holds {dict(counts)} modules; "
                "drop --kind (or pass 'auto' or 'kohya')",
                path=self.path,
            )
        if options.lora_alpha is not None or options.lora_scale is not None:
            self.report.notes.append(
                "--lora-alpha / --lora-scale not used: kohya / LyCORIS files store alpha per module"
            )
        mapping = self._map({m.name: m.shape for m in modules}, base)
        self._modules = {mapping[m.name]: m for m in modules if m.name in mapping}
        for name, m in self._modules.items():
            self._check_dora_base(name, m)
        meta = self._source.metadata
        self.config: dict[str, Any] = {
            "format": "kohya / LyCORIS",
            "algorithms_in_file": dict(sorted(counts.items())),
            **{k: meta[k] for k in _SS_KEYS if k in meta},
        }

    def modules(self) -> list[ModuleInfo]:
        """Every module, sorted by (base) module name; algorithm and rank bound in ``detail``."""
        return [self._info(name, m) for name, m in sorted(self._modules.items())]

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module in ``options.dtype`` (every stored tensor widened first): factored
        for LoRA (left = s·up (out, r), right = down (r, in·kh·kw)), dense otherwise, and dense
        with the base weight for a weight-decomposed module (``dora_scale``).

        Raises:
            MissingTensorError: ``module`` is not listed by :meth:`modules`.
            AmbiguousInputError: A weight-decomposed module and no base was given.
        """
        inner = self._inner_update(module)
        m = self._modules[module]
        return inner if m.dora is None else self._dora_update(module, m, inner)

    def _inner_update(self, module: str) -> ModuleUpdate:
        """ΔW of the module's LoRA / LoHa / LoKr / full tensors (before any ``dora_scale``)."""
        if module not in self._modules:
            raise missing_key(module, self.path, sorted(self._modules))
        m = self._modules[module]
        get = self._getter()
        if m.algo == "lora":
            assert m.r is not None
            left = m.scale * get(m.keys["lora_up.weight"]).reshape(m.shape[0], m.r)  # (out, r)
            right = get(m.keys["lora_down.weight"]).reshape(m.r, -1)  # (r, in·kh·kw)
            return ModuleUpdate(module=module, shape=m.shape, left=left, right=right)
        if m.algo == "loha":
            w1_a, w1_b, w2_a, w2_b = (get(m.keys[k]) for k in LOHA_KEYS)
            dense = loha_delta(w1_a, w1_b, w2_a, w2_b, m.scale)
        elif m.algo == "lokr":
            dense = lokr_delta(self._kron_part(m, "1", get), self._kron_part(m, "2", get), m.scale)
        else:
            dense = get(m.keys["diff"]).reshape(m.shape)
        return ModuleUpdate(module=module, shape=m.shape, dense=dense, notes=(m.rank_text,))

    def _dora_update(self, module: str, m: KohyaModule, inner: ModuleUpdate) -> ModuleUpdate:
        """ΔW = m ⊙ V / ‖V‖ − W0, V = W0 + ΔW_inner, over the axis of ``dora_scale``."""
        assert m.dora is not None
        key, axis, kernel = m.dora
        if self._base is None:
            raise AmbiguousInputError(
                "weight decomposition (dora_scale): ΔW = m ⊙ (W0 + ΔW')/‖W0 + ΔW'‖ − W0, so this "
                "module's ΔW needs BASE; pass the base model (spectra compare BASE CKPT…, or "
                "--base for inspect/diagnose)",
                path=self.path,
                key=module,
            )
        dtype = self._options.dtype
        w0 = TensorStream(self._base).widened(f"{module}.weight", dtype).reshape(m.shape)
        magnitude = self._source.get(key).to(dtype).reshape(-1)  # (out,) | (in,)
        dense = weight_decomposed_delta(
            w0, inner.materialize(), magnitude, axis=axis, kernel=kernel
        )
        note = f"weight decomposition (dora_scale, per {axis.value} channel): dense, with W0"
        return ModuleUpdate(module=module, shape=m.shape, dense=dense, notes=(*inner.notes, note))

    def _check_dora_base(self, name: str, m: KohyaModule) -> None:
        """With a base: a per-input ``dora_scale`` must have one entry per input channel of
        the base weight (its stored dimension 1)."""
        if m.dora is None or self._base is None or m.dora[1] is not MagnitudeAxis.INPUT:
            return
        stored = self._base.shape(f"{name}.weight")
        channels = m.shape[1] // m.dora[2]
        if len(stored) < 2 or stored[1] != channels:
            raise AdapterConfigError(
                f"dora_scale has {channels} input channels but the base weight {name!r} of "
                f"{self._base.path} has shape {tuple(stored)}; pass the base model this adapter "
                "was trained on",
                path=self.path,
                key=m.dora[0],
            )

    # --- reading -----------------------------------------------------------------------------

    def _getter(self):  # -> Callable[[str], torch.Tensor]
        dtype = self._options.dtype
        return lambda key: self._source.get(key).to(dtype)

    @staticmethod
    def _kron_part(m: KohyaModule, i: str, get) -> torch.Tensor:
        """w_i of a LoKr module: whole, or w_i_a @ w_i_b."""
        whole = m.keys.get(f"lokr_w{i}")
        if whole is not None:
            return get(whole)
        return get(m.keys[f"lokr_w{i}_a"]) @ get(m.keys[f"lokr_w{i}_b"])

    # --- names and what the user sees ----------------------------------------------------------

    def _map(self, shapes: dict[str, tuple[int, int]], base: TensorSource | None) -> dict[str, str]:
        if base is None:
            self.report.notes.append(
                "no BASE given: modules keep kohya's flattened names (lora_unet_…, '_' for '.'); "
                "pass the base model to map them to module paths and check shapes"
            )
            return {n: n for n in shapes}
        base_shapes = {m: flat_shape(base.shape(k)) for m, k in base_modules(base).items()}
        return map_kohya_names(shapes, base_shapes, path=self.path, base_path=base.path,
                               report=self.report,
                               skip_mismatched=self._options.skip_mismatched)  # fmt: skip

    def _info(self, name: str, m: KohyaModule) -> ModuleInfo:
        first = next(iter(m.keys.values()))
        detail: dict[str, Any] = {
            "algorithm": m.algo,
            "structure": f"{_STRUCTURE[m.algo]}, {m.rank_text}"
            if m.algo == "lora"
            else m.rank_text,
            "stored_dtype": str(self._source.dtype(first)).removeprefix("torch."),
        }
        if m.r is not None:
            detail["r"] = m.r
        if name != m.name:
            detail["kohya_name"] = m.name
        rank = m.r if m.algo == "lora" and m.dora is None else None
        scaling = m.scaling_text
        if m.dora is not None:
            needs = "" if self._base is not None else " (needs BASE)"
            text = f"dora_scale per {m.dora[1].value} channel: dense, m ⊙ V/‖V‖ − W0{needs}"
            detail["weight_decomposition"] = text
            detail["structure"] = f"{m.algo} with weight decomposition ({text})"
            scaling += ", then the dora_scale magnitude m"
        return ModuleInfo(module=name, shape=m.shape, rank=rank, scaling=scaling, detail=detail)


def _kind(counts: Counter[Algo]) -> Kind:
    if set(counts) == {"loha"}:
        return "loha"
    if set(counts) == {"lokr"}:
        return "lokr"
    return "kohya"
