"""Match module names of a checkpoint to module names of its base model.

Checkpoints of the same network often differ by a leading prefix: a task head wraps the
backbone (``bert.encoder.layer.0.attention.self.query`` vs ``encoder.layer.0.attention.self.query``),
PEFT adds ``base_model.model.``, a training framework adds its own. This module is the one place
that decides which base module a checkpoint module is; every loader calls :func:`align_modules`
(adapters through :func:`align_to_base`, which also checks each ΔW shape against the base).

Rule, on dotted components:

1. an exact name match wins;
2. otherwise a name matches a base name when one is a proper dotted suffix of the other
   (``a.b.c`` ↔ ``b.c`` or ``b.c`` ↔ ``a.b.c``, never ``x.b.c`` ↔ ``a.b.c``: a *replaced*
   prefix is not tolerated, only an added or removed one), provided exactly one base name
   qualifies; several candidates raise :class:`~spectra.errors.CheckpointMismatchError`
   listing them;
3. a base name is used at most once; two checkpoint names claiming the same base name raise
   :class:`~spectra.errors.CheckpointMismatchError`.

Names that match nothing are returned in :attr:`Alignment.unmatched`; the caller reports them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spectra.errors import AdapterConfigError, CheckpointMismatchError
from spectra.io.source import TensorSource
from spectra.loaders.base import LoadReport

_MAX_LISTED = 5  # candidates / names shown in one error message
_WEIGHT = ".weight"


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_modules`.

    Attributes:
        mapping: Checkpoint module name → base module name, for every name that matched.
        unmatched: Checkpoint names with no base counterpart, sorted.
        unused_base: Base names no checkpoint name matched, sorted.
        prefixed: The subset of ``mapping`` matched by prefix rather than exactly.
    """

    mapping: dict[str, str]
    unmatched: list[str] = field(default_factory=list)
    unused_base: list[str] = field(default_factory=list)
    prefixed: dict[str, str] = field(default_factory=dict)

    def prefix_note(self) -> str | None:
        """A one-line note for ``LoadReport.notes`` when names matched by prefix, else None."""
        if not self.prefixed:
            return None
        name, base_name = next(iter(self.prefixed.items()))
        return (
            f"{len(self.prefixed)} modules matched the base by a differing leading prefix, "
            f"e.g. {name!r} -> {base_name!r}"
        )


def align_modules(
    names: Iterable[str],
    base_names: Iterable[str],
    *,
    path: str | Path | None = None,
    base_path: str | Path | None = None,
) -> Alignment:
    """Map each checkpoint module name to the base module name it updates.

    Names are module paths without ``.weight`` (any dotted names work: the rule only looks at
    dotted components). See the module docstring for the rule.

    Args:
        names: Module names found in the checkpoint (tuned model or adapter).
        base_names: Module names found in the base checkpoint.
        path: The checkpoint file or directory, named in error messages.
        base_path: The base file or directory, named in error messages.

    Returns:
        An :class:`Alignment`; ``mapping`` values are base names.

    Raises:
        CheckpointMismatchError: A name has several base candidates by prefix, or two names
            claim the same base name.
    """
    names = sorted(set(names))
    base = sorted(set(base_names))
    base_set = set(base)
    exact = {n: n for n in names if n in base_set}
    free_base = [b for b in base if b not in exact]
    by_full, by_suffix = _suffix_index(free_base)

    prefixed: dict[str, str] = {}
    unmatched: list[str] = []
    for name in names:
        if name in exact:
            continue
        candidates = _candidates(name, by_full, by_suffix)
        if len(candidates) > 1:
            raise CheckpointMismatchError(
                f"module {name!r} matches several base modules after removing or adding a "
                f"leading prefix: {_listing(candidates)}; the base ({base_path}) and this "
                "checkpoint are not the same architecture, or pass the matching base",
                path=path,
                key=name,
            )
        if candidates:
            prefixed[name] = candidates[0]
        else:
            unmatched.append(name)

    _refuse_double_claims(prefixed, path=path, base_path=base_path)
    mapping = {**exact, **prefixed}
    used = set(mapping.values())
    return Alignment(
        mapping=dict(sorted(mapping.items())),
        unmatched=unmatched,
        unused_base=[b for b in base if b not in used],
        prefixed=prefixed,
    )


def _suffix_index(
    base: list[str],
) -> tuple[dict[tuple[str, ...], str], dict[tuple[str, ...], list[str]]]:
    """Index base names by their full component tuple and by every proper suffix of it.

    Costs O(total components); lookups are then O(components of one name) per name.
    """
    by_full: dict[tuple[str, ...], str] = {}
    by_suffix: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for b in base:
        parts = tuple(b.split("."))
        by_full[parts] = b
        for i in range(1, len(parts)):
            by_suffix[parts[i:]].append(b)
    return by_full, by_suffix


def _candidates(
    name: str,
    by_full: dict[tuple[str, ...], str],
    by_suffix: dict[tuple[str, ...], list[str]],
) -> list[str]:
    """Base names that are a proper dotted suffix of ``name``, or have ``name`` as one."""
    parts = tuple(name.split("."))
    found = {by_full[parts[i:]] for i in range(1, len(parts)) if parts[i:] in by_full}
    found.update(by_suffix.get(parts, ()))
    return sorted(found)


def _refuse_double_claims(
    prefixed: dict[str, str], *, path: str | Path | None, base_path: str | Path | None
) -> None:
    claims: dict[str, list[str]] = defaultdict(list)
    for name, b in prefixed.items():
        claims[b].append(name)
    for b, claimants in sorted(claims.items()):
        if len(claimants) > 1:
            raise CheckpointMismatchError(
                f"several modules match base module {b!r} of {base_path} by prefix: "
                f"{_listing(claimants)}; the checkpoint holds more copies of this module than "
                "the base, so it is not a fine-tune of this base",
                path=path,
                key=b,
            )


def _listing(items: list[str]) -> str:
    shown = ", ".join(repr(s) for s in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def base_modules(base: TensorSource) -> dict[str, str]:
    """The modules of a base checkpoint: module name → its ``.weight`` key.

    The same tensors :class:`~spectra.loaders.full.FullReader` treats as modules
    (:func:`matrix_keys`), so that adapters and full fine-tunes are aligned against one list.
    """
    return {k.removesuffix(_WEIGHT): k for k in matrix_keys(base, LoadReport(), record=False)}


def matrix_keys(source: TensorSource, report: LoadReport, *, record: bool) -> list[str]:
    """Keys of ``source`` that are weight matrices to analyse (the one place of this rule).

    **choice**: a key ending in ``.weight`` whose tensor is floating point with ndim ≥ 2 is a
    module, named by the key without ``.weight`` (conv kernels (out, in, kh, kw) are later
    flattened to (out, in·kh·kw)). 1-D floating tensors (biases, norm scales) go to
    ``report.skipped_1d``; other floating tensors with ndim ≥ 2 (``pos_embed``,
    ``cls_token``: not a layer's weight matrix, flattening would invent a layout) and
    non-floating tensors (``position_ids``, ``num_batches_tracked``) are skipped and counted
    in ``report.notes``. A weight with a zero-sized dimension (e.g. (0, 8)) holds no value to
    analyse: it is skipped, counted in ``report.notes`` and listed in ``report.skipped``.

    Args:
        source: The checkpoint's tensors.
        report: Receives the skips when ``record``.
        record: Record skips (the tuned / adapted side is the one reported).

    Returns:
        The module keys, in ``source.keys()`` order.
    """
    matrices: list[str] = []
    other: list[str] = []
    empty: list[str] = []
    non_float = 0
    keys = source.keys()  # TensorSource is not iterable
    for key in keys:
        dtype, shape = source.dtype(key), source.shape(key)
        if not dtype.is_floating_point:
            non_float += 1
        elif len(shape) == 1:
            report.skipped_1d.append(key)
        elif len(shape) >= 2 and key.endswith(_WEIGHT):
            (empty if math.prod(shape) == 0 else matrices).append(key)
        else:
            other.append(key)
    if record and other:
        report.notes.append(
            f"skipped {len(other)} floating tensors that are not a layer's .weight matrix "
            f"(scalars, embeddings-like parameters), e.g. {other[0]!r}"
        )
    if record and non_float:
        report.notes.append(f"skipped {non_float} non-floating tensors (ids, counters)")
    if record and empty:
        report.skipped.update(
            {k: f"shape {tuple(source.shape(k))} has a zero-sized dimension" for k in empty}
        )
        report.notes.append(
            f"skipped {len(empty)} weights with a zero-sized dimension (no values to analyse), "
            f"e.g. {empty[0]!r} {tuple(source.shape(empty[0]))}"
        )
    return matrices


def refuse_zero_sized(source: TensorSource, keys: Iterable[str], *, path: Path) -> None:
    """Refuse adapter factors with a zero-sized dimension (rank 0, or no channels).

    **choice**: a full checkpoint's empty weight is a real (if useless) layer and is skipped
    (:func:`matrix_keys`); an adapter's empty factor is a broken file, since no library writes
    a rank-0 LoRA, so it is refused with one line naming the key and shape.

    Raises:
        AdapterConfigError: A key's tensor has a zero-sized dimension.
    """
    for key in keys:
        shape = tuple(source.shape(key))
        if len(shape) >= 2 and math.prod(shape) == 0:
            raise AdapterConfigError(
                f"this adapter factor has shape {shape}, with a zero-sized dimension (rank 0 or "
                "no channels), so it holds no update; the file is broken: save it again",
                path=path,
                key=key,
            )


def non_float_matrix_keys(source: TensorSource) -> list[str]:
    """Keys ending in ``.weight`` with ndim ≥ 2 whose dtype is not floating point (integer or
    bool: quantized weights, id tables): never a module, but named when they meet a floating
    weight of the same module in the other checkpoint."""
    keys = source.keys()  # TensorSource is not iterable
    return [
        k
        for k in keys
        if k.endswith(_WEIGHT)
        and len(source.shape(k)) >= 2
        and not source.dtype(k).is_floating_point
    ]


def flat_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(out, in·kh·kw…) of a stored weight: the layout every ΔW is reported in."""
    return (shape[0], math.prod(shape[1:]))


def align_to_base(
    shapes: Mapping[str, tuple[int, int]],
    base: TensorSource | None,
    *,
    path: Path,
    report: LoadReport,
    hints: Mapping[str, str] | None = None,
    skip_mismatched: bool = False,
) -> dict[str, str]:
    """Map adapter module names to base module names and check each ΔW shape against the base.

    Shared by the adapter readers (PEFT LoRA, DoRA, plain LoRA state dicts, MultiLoRA). Base
    modules are :func:`base_modules`; names are aligned by :func:`align_modules`.

    Args:
        shapes: Adapter module name → ΔW shape (out, in·kh·kw) in the base weight's layout.
        base: The base model's tensors, or None (names are kept as they are).
        path: The adapter file, named in errors.
        report: Receives a note when names were matched by a differing prefix, and the
            modules left out by ``skip_mismatched``.
        hints: Extra text per module for a shape-mismatch error.
        skip_mismatched: Leave out (and record, :meth:`LoadReport.skip`) modules with no base
            weight or a different shape instead of refusing; refused still when none is left.

    Returns:
        Adapter module name → the name reported (the base name when a base is given; its
        weight is ``name + ".weight"`` in the base); modules left out are absent.

    Raises:
        CheckpointMismatchError: A module has no base counterpart, or shapes differ (with
            ``skip_mismatched``: no module is left).
    """
    if base is None:
        return {name: name for name in shapes}
    base_keys = base_modules(base)
    alignment = align_modules(shapes, base_keys, path=path, base_path=base.path)
    errors: dict[str, CheckpointMismatchError] = {}
    if alignment.unmatched:
        first = alignment.unmatched[0]
        errors[first] = CheckpointMismatchError(
            f"{len(alignment.unmatched)} adapted modules have no weight in the base "
            f"({base.path}), e.g. {first!r}; pass the base model this adapter "
            "was trained on",
            path=path,
            key=first,
        )
        if not skip_mismatched:
            raise errors[first]
    note = alignment.prefix_note()
    if note:
        report.notes.append(note)
    skipped = {name: f"no weight in the base ({base.path})" for name in alignment.unmatched}
    mapping: dict[str, str] = {}
    for name, base_name in alignment.mapping.items():
        stored = base.shape(base_keys[base_name])
        if flat_shape(stored) == tuple(shapes[name]):
            mapping[name] = base_name
            continue
        errors[name] = CheckpointMismatchError(
            f"ΔW has shape {tuple(shapes[name])} but the base weight {base_keys[base_name]!r} "
            f"of {base.path} has shape {tuple(stored)}{(hints or {}).get(name, '')}; pass the "
            "base model this adapter was trained on",
            path=path,
            key=name,
        )
        if not skip_mismatched:
            raise errors[name]
        skipped[name] = (
            f"ΔW shape {tuple(shapes[name])}, base weight {base_keys[base_name]!r} {tuple(stored)}"
        )
    if skipped and not mapping:
        raise next(iter(errors.values()))
    if skipped:
        report.skip(dict(sorted(skipped.items())), why="--skip-mismatched")
    return mapping
