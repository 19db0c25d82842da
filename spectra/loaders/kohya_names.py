"""kohya module names (``lora_unet_down_blocks_0_attentions_0_proj_in``) mapped back to module
paths of a base checkpoint (``down_blocks.0.attentions.0.proj_in``).

sd-scripts (``networks/lora.py``, ``create_modules``) names a module
``prefix + "." + module path`` with every ``.`` replaced by ``_``; the prefix says which model
it belongs to: ``lora_unet`` (U-Net), ``lora_te`` (text encoder; SDXL ``lora_te1`` /
``lora_te2``, SD3 ``lora_te3``), ``lora_transformer`` (DiT models); LyCORIS uses the same rule
(and ``lycoris`` for other models). Since module paths themselves contain ``_``
(``attn_1``, ``to_out``), the flattening cannot be undone from the name alone: it is resolved
against the base's module names.

Rule (:func:`map_kohya_names`):

1. the stem (name without its prefix) is compared with every base module path flattened the
   same way, and with every dotted suffix of it flattened (the base may carry an extra leading
   prefix such as ``unet.``); a whole-path match wins over a suffix match;
2. several candidates are narrowed to those whose weight has the module's ΔW shape; if more
   than one is left the name is refused, listing them (the files cannot tell which is meant);
3. a prefix group none of whose names is in the base (the text encoder of a LoRA when BASE is
   the U-Net) is left out and named in the report; a group that matches only in part is
   refused (wrong base).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from spectra.errors import AmbiguousInputError, CheckpointMismatchError
from spectra.loaders.base import LoadReport

KOHYA_PREFIXES = (
    "lora_unet_",
    "lora_te1_",
    "lora_te2_",
    "lora_te3_",
    "lora_te_",
    "lora_transformer_",
    "lycoris_",
)
_MAX_LISTED = 5


def split_prefix(name: str) -> tuple[str, str]:
    """(prefix, stem): the kohya prefix of a name (``""`` when it has none) and the rest."""
    prefix = next((p for p in KOHYA_PREFIXES if name.startswith(p)), "")
    return prefix, name[len(prefix) :]


def map_kohya_names(
    shapes: Mapping[str, tuple[int, int]],
    base_shapes: Mapping[str, tuple[int, int]],
    *,
    path: Path,
    base_path: Path,
    report: LoadReport,
    skip_mismatched: bool = False,
) -> dict[str, str]:
    """Map kohya names to base module paths (see the module docstring for the rule).

    Args:
        shapes: kohya name (with prefix) → ΔW shape (out, in·kh·kw).
        base_shapes: base module path → its weight's flattened shape.
        path: The kohya file, named in errors.
        base_path: The base checkpoint, named in errors.
        report: Receives a note per prefix group left out, and the modules
            ``skip_mismatched`` leaves out.
        skip_mismatched: Leave out (and record) the names of a partly matched group that match
            no base module of their shape, instead of refusing.

    Returns:
        kohya name → base module path, for every name of the groups kept.

    Raises:
        AmbiguousInputError: A name matches several base modules of the right shape.
        CheckpointMismatchError: Part of a group matches nothing, two names claim one module,
            a shape differs, or no name matches at all.
    """
    index = _flat_index(base_shapes)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(shapes):
        groups[split_prefix(name)[0]].append(name)
    mapping: dict[str, str] = {}
    for prefix, names in sorted(groups.items()):
        found = {n: _resolve(n, shapes[n], index, base_shapes, path) for n in names}
        missing = [n for n, b in found.items() if b is None]
        if len(missing) == len(names):
            report.notes.append(
                f"{len(names)} module{'s' * (len(names) > 1)} named {prefix or '(no prefix)'}… "
                f"{'have' if len(names) > 1 else 'has'} no weight in the base "
                f"({base_path}) and are not analysed (e.g. {names[0]!r}); pass the model they "
                "belong to as BASE to analyse them"
            )
            continue
        if missing and skip_mismatched:
            report.skip(
                {n: f"no base weight of shape {shapes[n]} in {base_path}" for n in missing},
                why="--skip-mismatched",
            )
        elif missing:
            raise CheckpointMismatchError(
                f"{len(missing)} of {len(names)} {prefix or 'unprefixed'} modules have no weight "
                f"in the base ({base_path}), e.g. {missing[0]!r}; pass the base model this "
                "adapter was trained on",
                path=path,
                key=missing[0],
            )
        mapping.update({n: b for n, b in found.items() if b is not None})
    _check(mapping, shapes, base_shapes, path=path, base_path=base_path)
    return mapping


def _flat_index(base_shapes: Mapping[str, tuple[int, int]]) -> dict[str, list[tuple[int, str]]]:
    """Flattened dotted suffix → [(components dropped, base path)], every suffix of every path."""
    index: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for b in base_shapes:
        parts = b.split(".")
        for i in range(len(parts)):
            index["_".join(parts[i:])].append((i, b))
    return index


def _resolve(
    name: str,
    shape: tuple[int, int],
    index: Mapping[str, list[tuple[int, str]]],
    base_shapes: Mapping[str, tuple[int, int]],
    path: Path,
) -> str | None:
    """The one base path a kohya name stands for, or None."""
    entries = index.get(split_prefix(name)[1], [])
    whole = [b for i, b in entries if i == 0]
    candidates = sorted(set(whole or [b for _, b in entries]))
    if len(candidates) > 1:
        fitting = [b for b in candidates if base_shapes[b] == shape]
        if len(fitting) != 1:
            shown = ", ".join(repr(c) for c in (fitting or candidates)[:_MAX_LISTED])
            raise AmbiguousInputError(
                f"{name!r} could be any of the base modules {shown} (kohya writes '_' for '.', "
                f"so the name alone cannot tell which{', and their shapes agree' if fitting else ''}); "
                "the files cannot resolve it: rename the module in the adapter to one candidate",
                path=path,
                key=name,
            )
        return fitting[0]
    return candidates[0] if candidates else None


def _check(
    mapping: Mapping[str, str],
    shapes: Mapping[str, tuple[int, int]],
    base_shapes: Mapping[str, tuple[int, int]],
    *,
    path: Path,
    base_path: Path,
) -> None:
    """Refuse an empty mapping, two names on one base module, or a shape that differs."""
    if not mapping:
        raise CheckpointMismatchError(
            f"no module of this file has a weight in the base ({base_path}); pass the base "
            "model (U-Net or text encoder) this adapter was trained on",
            path=path,
        )
    claims: dict[str, list[str]] = defaultdict(list)
    for name, b in mapping.items():
        claims[b].append(name)
        if base_shapes[b] != shapes[name]:
            raise CheckpointMismatchError(
                f"ΔW has shape {shapes[name]} but base module {b!r} of {base_path} has "
                f"{base_shapes[b]}; pass the base model this adapter was trained on",
                path=path,
                key=name,
            )
    for b, names in sorted(claims.items()):
        if len(names) > 1:
            raise CheckpointMismatchError(
                f"{names} all map to base module {b!r}; the file holds two updates of one "
                "module, so it is not an adapter of this base",
                path=path,
                key=names[0],
            )
