"""Where a module sits in its model: stack, layer index and module type, and natural order.

A module path such as ``decoder.block.3.layer.1.EncDecAttention.q`` is read as

* its **layer**: the first all-digit component (3);
* its **stack prefix**: the path before it (``decoder.block``);
* its **module type**: the path after it (``layer.1.EncDecAttention.q``).

Models with several stacks (T5/BART encoder and decoder, CLIP's text and vision towers,
Whisper, a diffusion U-Net's down/mid/up blocks) reuse layer indices in every stack, so
(layer, module type) alone would put encoder block 3 and decoder block 3 into one group. The
**stack** names the prefix in words: the prefixes of all the model's modules are compared, the
components they all share at the end (``block``, ``encoder.layers``) and at the start
(``model``) are dropped, and what is left names the stack (``encoder``, ``decoder``,
``text_model``, ``vision_model``). A model with one stack has stack ``""`` everywhere. In a
diffusers U-Net the stack is the block (``down_blocks.1``, ``mid_block``, ``up_blocks.0``),
and the layer is the next index (``attentions.0`` → layer 0, type
``attentions.transformer_blocks.0.attn1.to_q``). (stack, layer, module type) is unique per
module path; a path without any digit component has layer None and is its own type.

Natural order sorts digit components as numbers: ``block.2`` before ``block.10``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Position", "module_layer", "natural_key", "positions", "stack_prefix"]

# diffusers U-Net containers whose index names a block (the stack), not a layer
_UNET_BLOCKS = ("down_blocks", "up_blocks")
_UNET_MID = "mid_block"


@dataclass(frozen=True)
class Position:
    """A module's place: ``stack`` ("" for a single-stack model), ``layer`` (None when the
    path has no index) and ``module_type``."""

    stack: str
    layer: int | None
    module_type: str


def _split(module: str) -> tuple[list[str], int | None, list[str]]:
    """(stack prefix components, layer, type components) of a path (see the module doc)."""
    parts = module.split(".")
    start = 0
    for i, part in enumerate(parts):
        if part == _UNET_MID:
            start = i + 1
            break
        if part in _UNET_BLOCKS and i + 1 < len(parts) and parts[i + 1].isdigit():
            start = i + 2
            break
    for i in range(start, len(parts)):
        if parts[i].isdigit():
            prefix, rest = parts[:i], parts[i + 1 :]
            if start and i > start:  # U-Net: the container (attentions, resnets) goes to the type
                prefix, rest = parts[:start], parts[start:i] + rest
            return prefix, int(parts[i]), rest
    return [], None, parts


def module_layer(module: str) -> tuple[int | None, str]:
    """Layer index and module type of a module path.

    ``encoder.layer.3.attention.self.query`` → (3, ``attention.self.query``); a path with no
    digit component has layer None and is its own type.
    """
    _, layer, rest = _split(module)
    return layer, ".".join(rest) or module


def stack_prefix(module: str) -> str:
    """The path before the layer index (``decoder.block``; ``down_blocks.1`` in a U-Net);
    ``""`` when the path has no index."""
    return ".".join(_split(module)[0])


def stack_names(prefixes: Iterable[str]) -> dict[str, str]:
    """Stack prefix → stack name: the components every prefix shares at the end and at the
    start are dropped (as long as no name becomes empty); one prefix → ``""``."""
    unique = sorted({p for p in prefixes if p})
    if len(unique) < 2:
        return {p: "" for p in unique}
    split = [p.split(".") for p in unique]
    while all(len(s) > 1 for s in split) and len({s[-1] for s in split}) == 1:
        split = [s[:-1] for s in split]
    while all(len(s) > 1 for s in split) and len({s[0] for s in split}) == 1:
        split = [s[1:] for s in split]
    return {p: ".".join(s) for p, s in zip(unique, split, strict=True)}


def positions(modules: Iterable[str]) -> dict[str, Position]:
    """Every module's :class:`Position`, stacks named against all of ``modules`` (the modules
    of the checkpoints analysed together)."""
    modules = sorted(set(modules))
    names = stack_names(stack_prefix(m) for m in modules)
    out = {}
    for m in modules:
        layer, mtype = module_layer(m)
        out[m] = Position(names.get(stack_prefix(m), ""), layer, mtype)
    return out


def natural_key(module: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key of a module path with its digit components compared as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in module.split("."))
