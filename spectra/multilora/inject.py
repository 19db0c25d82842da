"""Put MultiLoRA into a model, train only it, save and load it, merge and unmerge it.

Module paths are those of the wrapped ``nn.Linear`` layers in the model before injection
(``encoder.layer.0.attention.self.query``), the names the on-disk format
(:mod:`spectra.multilora.format`) stores, so a file lines up with the base checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spectra.errors import AdapterConfigError, CheckpointMismatchError
from spectra.io import TensorSource, open_tensors
from spectra.multilora.config import MultiLoRAConfig
from spectra.multilora.format import (
    SUFFIX_A,
    SUFFIX_B,
    SUFFIX_S,
    MultiLoRAFileConfig,
    parse_file_config,
    write_multilora,
)
from spectra.multilora.layer import MultiLoRALinear

_PARAM_NAMES = (SUFFIX_A[1:], SUFFIX_B[1:], SUFFIX_S[1:])  # multilora_A, _B, _scaling


def inject_multilora(model: nn.Module, config: MultiLoRAConfig) -> list[str]:
    """Replace every ``nn.Linear`` targeted by ``config.target_modules`` with a
    :class:`MultiLoRALinear` wrapping it, in place.

    Args:
        model: Any module tree; the root itself cannot be replaced.
        config: Layer settings and targets (see :meth:`MultiLoRAConfig.matches`).

    Returns:
        The module paths adapted, in ``named_modules`` order.

    Raises:
        ValueError: Nothing matches (the message lists the Linear layers there are), a target
            is already a MultiLoRA layer, or a target is the ``out_proj`` of an
            ``nn.MultiheadAttention`` (which reads its weight without calling its forward).
    """
    targets = _find_targets(model, config)
    for path in targets:
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, child, MultiLoRALinear(getattr(parent, child), config))
    return targets


def _find_targets(model: nn.Module, config: MultiLoRAConfig) -> list[str]:
    wrapped = [p for p, m in model.named_modules() if isinstance(m, MultiLoRALinear)]
    if any(config.matches(p) for p in wrapped):
        raise ValueError(
            f"target_modules {config.target_modules} match layers that already hold MultiLoRA: "
            f"{[p for p in wrapped if config.matches(p)]}"
        )
    inside = {p + ".base_layer" for p in wrapped}
    linears = [
        (p, m)
        for p, m in model.named_modules()
        if isinstance(m, nn.Linear) and p and p not in inside
    ]
    targets = [p for p, _ in linears if config.matches(p)]
    for p, m in linears:
        if p in targets and isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):
            raise ValueError(
                f"{p} is the out_proj of an nn.MultiheadAttention, which uses its weight without "
                "calling its forward, so an adapter there would be ignored; remove it from "
                "target_modules"
            )
    if not targets:
        raise ValueError(_no_match_message(type(model).__name__, config, [p for p, _ in linears]))
    return targets


def _no_match_message(model_name: str, config: MultiLoRAConfig, linears: list[str]) -> str:
    if not linears:
        return f"{model_name} has no nn.Linear layers (below its root) to put MultiLoRA into"
    last_names = sorted({p.rpartition(".")[2] for p in linears})
    return (
        f"target_modules {config.target_modules} match none of the {len(linears)} nn.Linear "
        f"layers of {model_name}; their names end in: {', '.join(last_names)} "
        f"(e.g. {linears[0]}). Pass some of these names, or 're:<regex>' for full paths"
    )


def multilora_layers(model: nn.Module) -> dict[str, MultiLoRALinear]:
    """Every MultiLoRA layer of ``model`` by the module path of the Linear it wraps."""
    return {p: m for p, m in model.named_modules() if isinstance(m, MultiLoRALinear)}


def _require_layers(model: nn.Module) -> dict[str, MultiLoRALinear]:
    layers = multilora_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} holds no MultiLoRA layers; call inject_multilora")
    return layers


def mark_only_multilora_trainable(model: nn.Module) -> int:
    """Set ``requires_grad`` True on the MultiLoRA parameters and False on all others.

    Returns:
        The number of trainable parameter elements.

    Raises:
        ValueError: The model holds no MultiLoRA layers.
    """
    layers = _require_layers(model)
    model.requires_grad_(False)
    for layer in layers.values():
        for name in _PARAM_NAMES:
            getattr(layer, name).requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def multilora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors in the on-disk key layout (detached, not copied).

    Returns:
        ``<m>.multilora_A`` (n, r_m, in), ``<m>.multilora_B`` (n, out, r_m) and
        ``<m>.multilora_scaling`` (n, out) or (n,) for every adapted module path ``<m>``.
    """
    out: dict[str, torch.Tensor] = {}
    for path, layer in multilora_layers(model).items():
        for name in _PARAM_NAMES:
            out[f"{path}.{name}"] = getattr(layer, name).detach()
    return out


def save_multilora(
    model: nn.Module,
    path: str | Path,
    config: MultiLoRAConfig,
    base_model: str | None = None,
) -> Path:
    """Write the model's MultiLoRA tensors and config to one file (atomically).

    Args:
        model: A model prepared with :func:`inject_multilora` using ``config``.
        path: ``.safetensors`` (preferred) or ``.pt``/``.pth``/``.bin``.
        config: The config the layers were built with; the file stores r = ``module_rank``.
        base_model: Name or path of the base model, stored for reference.

    Returns:
        The path written.

    Raises:
        ValueError: No MultiLoRA layers, or a layer was built with other n/r/α/scaling.
    """
    for layer_path, layer in _require_layers(model).items():
        if _delta_settings(layer.config) != _delta_settings(config):
            raise ValueError(
                f"{layer_path} was built with {layer.config}, not the config given: {config}"
            )
    file_config = MultiLoRAFileConfig(
        r=config.module_rank,
        n=config.n,
        lora_alpha=float(config.lora_alpha),
        scaling=config.scaling,
        target_modules=config.target_modules,
        parameter_matched=config.parameter_matched,
        base_model=base_model,
    )
    return write_multilora(path, multilora_state_dict(model), file_config)


def _delta_settings(config: MultiLoRAConfig | MultiLoRAFileConfig) -> tuple[int, int, float, str]:
    """(r_m, n, α, scaling): what ΔW depends on, from a layer's or a file's config."""
    if isinstance(config, MultiLoRAConfig):
        return config.module_rank, config.n, float(config.lora_alpha), config.scaling
    return config.r, config.n, float(config.lora_alpha), config.scaling


def load_multilora(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the tensors of a MultiLoRA file into a model already injected with the same config.

    Args:
        model: Prepared with :func:`inject_multilora` on the same targets, n, r, α, scaling.
        path: A file written by :func:`save_multilora` (or ``write_multilora``).

    Returns:
        The module paths loaded.

    Raises:
        FileFormatError: Missing, unreadable, or not a spectra MultiLoRA file.
        UnsafeFileError: A torch file that needs code execution to unpickle.
        UnsupportedFormatError: A format version this spectra does not read.
        AdapterConfigError: The file's config is invalid, or its r, n, α or scaling differ from
            the layers'.
        CheckpointMismatchError: Keys missing or extra, or a shape differs.
        RuntimeError: A layer is merged (unmerge first).
    """
    path = Path(path)
    source = open_tensors(path)
    layers = _require_layers(model)
    file_config = parse_file_config(source.metadata, path)
    for layer_path, layer in layers.items():
        if layer.merged:
            raise RuntimeError(f"{layer_path} is merged; call unmerge_multilora before loading")
        in_file, in_layer = _delta_settings(file_config), _delta_settings(layer.config)
        if in_file != in_layer:
            raise AdapterConfigError(
                f"file has (r, n, lora_alpha, scaling) = {in_file}, the model's layer "
                f"{in_layer}; inject with the file's config",
                path=path,
                key=layer_path,
            )
    expected = multilora_state_dict(model)
    _check_keys_and_shapes(path, expected, source)
    with torch.no_grad():
        for key, param in expected.items():
            param.copy_(source.get(key))  # casts to the parameter's dtype/device
    return list(layers)


def _check_keys_and_shapes(
    path: Path, expected: dict[str, torch.Tensor], source: TensorSource
) -> None:
    found = set(source.keys())
    missing = sorted(set(expected) - found)
    extra = sorted(found - set(expected))
    if missing or extra:
        raise CheckpointMismatchError(
            f"file and model adapt different modules: missing in file {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, not in model {extra[:5]}"
            f"{' …' if len(extra) > 5 else ''}; inject the same target_modules as when saving",
            path=path,
        )
    for key, param in expected.items():
        if source.shape(key) != tuple(param.shape):
            raise CheckpointMismatchError(
                f"shape {source.shape(key)} in file, {tuple(param.shape)} in the model; "
                "the base model differs from the one the adapter was trained on",
                path=path,
                key=key,
            )


def merge_multilora(model: nn.Module, safe_merge: bool = False) -> list[str]:
    """Merge every MultiLoRA layer (see :meth:`MultiLoRALinear.merge`); all or none.

    Returns:
        The module paths merged.

    Raises:
        RuntimeError: Some layer is already merged (nothing is changed).
        ValueError: ``safe_merge`` found non-finite weights (layers merged so far are undone).
    """
    layers = _require_layers(model)
    already = [p for p, layer in layers.items() if layer.merged]
    if already:
        raise RuntimeError(f"already merged: {already}; call unmerge_multilora first")
    done: list[MultiLoRALinear] = []
    try:
        for layer in layers.values():
            layer.merge(safe_merge=safe_merge)
            done.append(layer)
    except ValueError as exc:
        for layer in done:
            layer.unmerge()
        bad = list(layers)[len(done)]
        raise ValueError(f"{bad}: {exc}; no layer was merged") from exc
    return list(layers)


def unmerge_multilora(model: nn.Module) -> list[str]:
    """Unmerge every merged MultiLoRA layer, restoring each base weight bit for bit.

    Returns:
        The module paths unmerged.

    Raises:
        RuntimeError: No layer is merged.
    """
    merged = {p: layer for p, layer in _require_layers(model).items() if layer.merged}
    if not merged:
        raise RuntimeError("no MultiLoRA layer is merged; nothing to unmerge")
    for layer in merged.values():
        layer.unmerge()
    return list(merged)
