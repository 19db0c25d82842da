"""What a full fine-tune changed besides the matrices an extracted LoRA adapts, and how PEFT
can carry it, so that nothing changed is silently dropped.

Every tensor of TUNED is compared with its BASE counterpart (aligned by name, prefix-tolerant,
:func:`~spectra.loaders.align.align_modules`); a tensor is *changed* when any stored element
differs. A changed tensor that is not an adapted matrix goes:

* the bias of an adapted module → either ``lora_B.bias`` with ``lora_bias: true`` (PEFT adds
  it to the base bias on merge; it then refuses embeddings and Linears without a bias, which
  are saved whole), or the module saved whole: whichever saves fewer parameters whole
  (:func:`_place_biases`);
* any other tensor of a module that owns no sub-modules (a norm's weight or bias, a conv
  kernel, a matrix not adapted) → its module goes to ``modules_to_save`` with all of its
  tensors from TUNED (PEFT replaces the module on merge);
* anything else (a parameter of a module with sub-modules, a top-level parameter, a tensor only
  in TUNED) → refused: PEFT has no place for it; the error lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from spectra.errors import CheckpointMismatchError
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream
from spectra.loaders.align import align_modules

_MAX_LISTED = 8


@dataclass
class Carry:
    """How the changes outside the adapted matrices travel with the adapter.

    Attributes:
        modules_to_save: Module path (base name) → {base key: tuned key} of all its tensors.
        lora_bias: Adapted module → tuned key of its changed bias (written as ``lora_B.bias``).
        demoted: Adapted modules moved whole to ``modules_to_save`` (a changed bias PEFT's
            ``lora_bias`` cannot carry).
        notes: One line each, for the user.
    """

    modules_to_save: dict[str, dict[str, str]] = field(default_factory=dict)
    lora_bias: dict[str, str] = field(default_factory=dict)
    demoted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_carry(
    tuned: TensorSource, base: TensorSource, adapted: dict[str, str], layouts: dict[str, str]
) -> Carry:
    """Find every changed tensor outside the adapted matrices and decide how it travels.

    Args:
        tuned: The fine-tuned checkpoint.
        base: Its base.
        adapted: Adapted module (base name) → layout (``"linear"``, ``"embedding"``, …).
        layouts: Layout of every matrix module (base names), for the ``lora_bias`` rule.

    Returns:
        The :class:`Carry`; ``adapted`` minus ``demoted`` is what the LoRA keeps.

    Raises:
        CheckpointMismatchError: Changed tensors PEFT cannot carry (listed), or tensors only in
            TUNED.
    """
    alignment = align_modules(tuned.keys(), base.keys(), path=tuned.path, base_path=base.path)
    extra = [k for k in alignment.unmatched if tuned.dtype(k).is_floating_point]
    if extra:
        raise CheckpointMismatchError(
            f"{len(extra)} tensors are not in the base ({_listing(extra)}); an adapter cannot "
            "add parameters: pass the base this model was fine-tuned from",
            path=tuned.path,
        )
    base_keys = set(base.keys())
    parents = {  # every module that owns a sub-module
        module.rsplit(".", i)[0]
        for module in (k.rpartition(".")[0] for k in base_keys)
        for i in range(1, module.count(".") + 1)
    }
    carry, refused, bias = Carry(), [], {}
    t_stream, b_stream = TensorStream(tuned), TensorStream(base)
    for tkey, bkey in alignment.mapping.items():
        module, _, param = bkey.rpartition(".")
        if param == "weight" and module in adapted:
            continue
        if not _changed(t_stream, tkey, b_stream, bkey):
            continue
        if module in adapted and param == "bias":
            bias[module] = tkey
        elif module and module not in parents and module not in adapted:
            carry.modules_to_save.setdefault(module, {})
        else:
            refused.append(tkey)
    if refused:
        raise CheckpointMismatchError(
            f"the fine-tune changed {len(refused)} tensors that a PEFT adapter cannot carry "
            f"(not a module's own weight or bias): {_listing(refused)}; extract cannot write "
            "an adapter that reproduces this model",
            path=tuned.path,
        )
    if bias:
        _place_biases(carry, bias, adapted, layouts, base)
    reverse = {b: t for t, b in alignment.mapping.items()}
    for module, keys in carry.modules_to_save.items():
        keys.update({b: reverse[b] for b in reverse if b.rpartition(".")[0] == module})
    return carry


def _place_biases(
    carry: Carry,
    bias: dict[str, str],
    adapted: dict[str, str],
    layouts: dict[str, str],
    base: TensorSource,
) -> None:
    """Changed biases of adapted modules: the cheaper of two exact ways, by parameters saved
    whole. (a) ``lora_bias``: PEFT then refuses embeddings and cannot merge into a Linear
    without a bias, so those modules are saved whole; (b) no ``lora_bias``: the modules whose
    bias changed are saved whole."""
    keys = set(base.keys())
    blocked = [m for m in adapted if not (layouts.get(m) == "linear" and f"{m}.bias" in keys)]

    def size(modules: list[str]) -> int:
        return sum(math.prod(base.shape(f"{m}.weight")) for m in modules)

    if size(blocked) <= size(list(bias)):
        carry.lora_bias, carry.demoted = bias, sorted(blocked)
        why = "they cannot take PEFT's lora_bias, used for the changed biases"
    else:
        carry.demoted = sorted(bias)
        why = "their bias changed and PEFT's lora_bias would cost more"
    carry.modules_to_save.update({m: {} for m in carry.demoted})
    if carry.demoted:
        carry.notes.append(
            f"{len(carry.demoted)} modules saved whole in modules_to_save ({why}), e.g. "
            f"{carry.demoted[0]!r}"
        )


def _changed(t: TensorStream, tkey: str, b: TensorStream, bkey: str) -> bool:
    """True when any element differs (each side widened exactly: float64 holds every float)."""
    ts, bs = t.source, b.source
    if ts.shape(tkey) != bs.shape(bkey):
        raise CheckpointMismatchError(
            f"shape {ts.shape(tkey)} here but {bs.shape(bkey)} in the base ({bs.path}, key "
            f"{bkey!r}); pass the base this model was fine-tuned from",
            path=ts.path,
            key=tkey,
        )
    if not (ts.dtype(tkey).is_floating_point and bs.dtype(bkey).is_floating_point):
        return not torch.equal(ts.get(tkey), bs.get(bkey))
    return not torch.equal(t.widened(tkey, torch.float64), b.widened(bkey, torch.float64))


def _listing(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in sorted(keys)[:_MAX_LISTED])
    return shown + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")
