"""The adapter of a model in training, read as a checkpoint: ΔW straight from the live layers.

:class:`LiveAdapter` implements :class:`~spectra.loaders.base.CheckpointReader` over the
adapter layers of a model in memory, so that :func:`spectra.analysis_module.analyze_module`
computes exactly the rows ``spectra compare`` computes from the saved adapter. Nothing is
copied to disk; every tensor is detached and only read (no gradient, no in-place change).

Layers read (the factors in the layout :mod:`spectra.loaders.lora_factors` gives the saved
file, scaling folded into the left factor after widening):

=============================  ==============================  ==================================
layer                          ΔW (stored layout of weight)    factors
=============================  ==============================  ==================================
PEFT LoRA ``Linear``           s · B A            (out, in)    left = s·B (out, r), right = A
  with ``fan_in_fan_out``      s · (B A)ᵀ         (in, out)    left = s·Aᵀ (in, r), right = Bᵀ
PEFT LoRA ``Embedding``        s · (B A)ᵀ    (n_emb, dim)      left = s·Aᵀ (n_emb, r), right = Bᵀ
PEFT LoRA ``Conv1d/2d/3d``     s · B A    (out, in·kh·kw)      B must be a 1×1 kernel
PEFT DoRA (any of the above)   m ⊙ (W0 + sBA)/‖·‖ − W0         dense (:func:`dora_delta`)
spectra ``MultiLoRALinear``    (α/r) Σ diag(s_i) B_i A_i       :func:`stack_factors`
=============================  ==============================  ==================================

s is the layer's own ``scaling[adapter]`` (α/r, or α/√r with rsLoRA, or whatever PEFT's
``set_scale`` made it), not re-derived from the config. Module names are the paths in the base
model: a PEFT wrapper's ``base_model.model.`` (``PeftModel``) or ``model.`` (``LoraModel``)
prefix is removed, as PEFT's ``save_pretrained`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spectra.errors import AdapterConfigError, UnsupportedFormatError
from spectra.io._common import missing_key
from spectra.loaders.base import LoadReport, ModuleInfo
from spectra.loaders.dora import dora_delta
from spectra.multilora.format import stack_factors
from spectra.multilora.layer import MultiLoRALinear
from spectra.update import Kind, ModuleUpdate

LIVE_PATH = Path("<live model>")
# (module, class, prefix its module paths carry); looked up only when PEFT is imported
_PEFT_WRAPPERS = (
    ("peft.peft_model", "PeftModel", "base_model.model."),
    ("peft.tuners.tuners_utils", "BaseTuner", "model."),
)


def _peft_lora_layer_type() -> type | None:
    """PEFT's ``LoraLayer`` class when PEFT is imported (a model can hold PEFT layers only
    then), else None; PEFT is never imported here."""
    module = sys.modules.get("peft.tuners.lora.layer")
    return None if module is None else getattr(module, "LoraLayer", None)


def adapter_layers(model: nn.Module) -> tuple[Kind, dict[str, nn.Module]]:
    """The adapter layers of ``model`` by module path in the base model, and their kind.

    Returns:
        (``"lora"`` | ``"multilora"``, {path: layer}) in ``named_modules`` order.

    Raises:
        AdapterConfigError: No PEFT LoRA layer and no MultiLoRA layer, or both kinds at once.
    """
    lora_type = _peft_lora_layer_type()
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: its module paths
    prefix = _prefix(model)
    multi = {
        _strip(p, prefix): m for p, m in model.named_modules() if isinstance(m, MultiLoRALinear)
    }
    peft = {}
    if lora_type is not None:
        peft = {_strip(p, prefix): m for p, m in model.named_modules() if isinstance(m, lora_type)}
    if multi and peft:
        raise AdapterConfigError(
            f"{type(model).__name__} holds both PEFT LoRA layers ({next(iter(peft))}) and "
            f"MultiLoRA layers ({next(iter(multi))}); track a model with one kind of adapter",
            path=LIVE_PATH,
        )
    if not multi and not peft:
        raise AdapterConfigError(
            f"{type(model).__name__} holds no PEFT LoRA layer and no spectra MultiLoRA layer: "
            "wrap it with peft.get_peft_model or spectra.multilora.inject_multilora first",
            path=LIVE_PATH,
        )
    return ("multilora", multi) if multi else ("lora", peft)


def _prefix(model: nn.Module) -> str:
    """The prefix PEFT's wrapper adds to module paths: ``base_model.model.`` for a
    ``PeftModel``, ``model.`` for a ``LoraModel`` (any ``BaseTuner``), '' for any other model
    (also one whose adapters transformers' own PEFT integration added: its paths are plain)."""
    for module_name, class_name, prefix in _PEFT_WRAPPERS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is not None and isinstance(model, cls):
            return prefix
    return ""


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) :] if prefix and path.startswith(prefix) else path


class LiveAdapter:
    """The adapter layers of a live model as a checkpoint reader (kind ``lora``, ``dora`` or
    ``multilora``).

    Args:
        model: A PEFT model (``PeftModel``, ``LoraModel`` or the model PEFT injected into) or a
            model holding :class:`~spectra.multilora.layer.MultiLoRALinear` layers.
        adapter: The PEFT adapter to read; None: the one active adapter (refused when several
            are active).
        dtype: Compute dtype; every factor is widened to it before any arithmetic.

    Raises:
        AdapterConfigError: No adapter layers, both kinds, several active adapters and none
            chosen, or the chosen adapter is in no layer.
    """

    def __init__(
        self, model: nn.Module, *, adapter: str | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        self.path = LIVE_PATH
        self.report = LoadReport()
        self._dtype = dtype
        kind, layers = adapter_layers(model)
        self._adapter = None if kind == "multilora" else _choose_adapter(layers, adapter)
        if self._adapter is not None:
            layers = {p: m for p, m in layers.items() if self._adapter in _lora_names(m)}
            if any(m.use_dora.get(self._adapter, False) for m in layers.values()):
                kind = "dora"
        self.kind: Kind = kind
        self._layers = layers
        self.config: dict[str, Any] = {"live": True, "adapter": self._adapter}

    def modules(self) -> list[ModuleInfo]:
        """Every adapted module, sorted by name (shapes from the factors, nothing computed)."""
        infos = []
        for name, layer in sorted(self._layers.items()):
            if isinstance(layer, MultiLoRALinear):
                c = layer.config
                shape = (layer.base_layer.out_features, layer.base_layer.in_features)
                infos.append(ModuleInfo(name, shape, c.n * c.module_rank, f"alpha/r = {c.scale:g}"))
            else:
                a, b, layout = self._factor_tensors(name, layer)
                rank = None if layer.use_dora.get(self._adapter, False) else a.shape[0]
                infos.append(
                    ModuleInfo(name, _shape(a, b, layout), rank, self._scaling_text(layer))
                )
        return infos

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module from the live parameters (see the module docstring), detached.

        Raises:
            MissingTensorError: ``module`` is not adapted.
            UnsupportedFormatError: A layer this reader cannot form ΔW of (named).
        """
        if module not in self._layers:
            raise missing_key(module, self.path, sorted(self._layers))
        layer = self._layers[module]
        with torch.no_grad():
            if isinstance(layer, MultiLoRALinear):
                return self._multilora_update(module, layer)
            return self._lora_update(module, layer)

    def _multilora_update(self, module: str, layer: MultiLoRALinear) -> ModuleUpdate:
        a = layer.multilora_A.detach().to(self._dtype)  # (n, r, in)
        b = layer.multilora_B.detach().to(self._dtype)  # (n, out, r)
        s = layer.multilora_scaling.detach().to(self._dtype)  # (n, out) or (n,)
        n, r = a.shape[0], a.shape[1]
        left, right = stack_factors(a, b, s, layer.config.scale)  # (out, n·r), (n·r, in)
        shape = (left.shape[0], right.shape[1])
        return ModuleUpdate(
            module=module, shape=shape, left=left, right=right, groups=(r,) * n, scaling=s
        )

    def _lora_update(self, module: str, layer: nn.Module) -> ModuleUpdate:
        a, b, layout = self._factor_tensors(module, layer)
        s = layer.scaling[self._adapter]
        a, b = a.detach().to(self._dtype), b.detach().to(self._dtype)
        r = a.shape[0]
        if layout in ("conv1d", "embedding"):
            left = (s * a.T).contiguous()  # (in, r) | (n_emb, r)
            right = b.T.contiguous()  # (r, out) | (r, dim)
        else:
            left = s * b.reshape(b.shape[0], r)  # (out, r)
            right = a.reshape(r, -1)  # (r, in) | (r, in·kh·kw)
        shape = (left.shape[0], right.shape[1])
        lora = ModuleUpdate(module=module, shape=shape, left=left, right=right)
        if not layer.use_dora.get(self._adapter, False):
            return lora
        return self._dora_update(module, layer, lora, layout)

    def _dora_update(
        self, module: str, layer: nn.Module, lora: ModuleUpdate, layout: str
    ) -> ModuleUpdate:
        w0 = layer.get_base_layer().weight
        if not w0.dtype.is_floating_point or layer.merged:
            why = "is merged" if layer.merged else f"has a {w0.dtype} (quantized) base weight"
            raise UnsupportedFormatError(
                f"DoRA layer {why}: its ΔW needs the unmerged floating-point W0; track it "
                "unmerged and unquantized, or save the adapter and run spectra compare",
                path=self.path,
                key=module,
            )
        w0 = w0.detach().to(self._dtype).reshape(lora.shape[0], -1)  # stored layout, flattened
        magnitude = layer.lora_magnitude_vector[self._adapter].weight.detach().to(self._dtype)
        out_dim = 1 if layout in ("conv1d", "embedding") else 0
        dense = dora_delta(w0, lora.materialize(), magnitude.reshape(-1), out_dim=out_dim)
        return ModuleUpdate(module=module, shape=lora.shape, dense=dense)

    def _factor_tensors(
        self, module: str, layer: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(A, B, layout) of a PEFT layer: layout ``linear``, ``conv1d`` (fan_in_fan_out),
        ``embedding`` or ``conv``."""
        adapter = self._adapter
        variant = getattr(layer, "lora_variant", {}).get(adapter)
        if variant is not None and not layer.use_dora.get(adapter, False):
            raise UnsupportedFormatError(
                f"PEFT LoRA variant {type(variant).__name__} is not read by spectra.track",
                path=self.path,
                key=module,
            )
        if adapter in getattr(layer, "lora_embedding_A", {}):
            return layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter], "embedding"
        lin_a, lin_b = layer.lora_A[adapter], layer.lora_B[adapter]
        if isinstance(lin_a, nn.Linear) and isinstance(lin_b, nn.Linear):
            layout = "conv1d" if getattr(layer, "fan_in_fan_out", False) else "linear"
            return lin_a.weight, lin_b.weight, layout
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        if isinstance(lin_a, conv) and isinstance(lin_b, conv) and lin_b.weight[0, 0].numel() == 1:
            return lin_a.weight, lin_b.weight, "conv"
        raise UnsupportedFormatError(
            f"PEFT layer {type(layer).__name__} with factors {type(lin_a).__name__} / "
            f"{type(lin_b).__name__} is not read by spectra.track (Linear, Embedding and conv "
            "LoRA with a 1×1 B are); save the adapter and run spectra compare",
            path=self.path,
            key=module,
        )

    def _scaling_text(self, layer: nn.Module) -> str:
        return f"layer scaling = {layer.scaling[self._adapter]:g}"


def _shape(a: torch.Tensor, b: torch.Tensor, layout: str) -> tuple[int, int]:
    """(out, in) of ΔW in the stored layout of the weight, from the factor shapes."""
    if layout in ("conv1d", "embedding"):
        return int(a.shape[1]), int(b.shape[0])
    return int(b.shape[0]), int(a[0].numel())


def _lora_names(layer: nn.Module) -> set[str]:
    return set(layer.lora_A) | set(getattr(layer, "lora_embedding_A", {}))


def _choose_adapter(layers: dict[str, nn.Module], adapter: str | None) -> str:
    present = sorted(set().union(*(_lora_names(m) for m in layers.values())))
    if adapter is not None:
        if adapter not in present:
            raise AdapterConfigError(
                f"adapter {adapter!r} is in no LoRA layer; the model has {', '.join(present)}",
                path=LIVE_PATH,
            )
        return adapter
    active = sorted({a for m in layers.values() for a in m.active_adapters if a in _lora_names(m)})
    if len(active) != 1:
        raise AdapterConfigError(
            f"{len(active)} active LoRA adapters ({', '.join(active) or 'none'}; present: "
            f"{', '.join(present)}): pass adapter='NAME' to choose the one to track",
            path=LIVE_PATH,
        )
    return active[0]
