"""A full fine-tune, or a bigger adapter, as a PEFT LoRA adapter of chosen rank.

For every adapted module, ΔW (W_tuned − W0 of a full fine-tune; the loader's ΔW of a LoRA,
DoRA or MultiLoRA adapter) is replaced by its best rank-r approximation ΔW_r (truncated SVD,
:mod:`spectra.decide.truncate`) and written as a LoRA with α = r, so s = α / r = 1 and
``merge_and_unload()`` onto BASE gives exactly W0 + ΔW_r (up to the stored dtype).

Ranks: one ``rank`` for all (clipped to an adapter's own inner rank; refused when larger than
a matrix), or per module from ``energy`` / ``budget`` (:mod:`spectra.decide.rank`, a first
pass over the spectra). Memory: module by module (one ΔW and its SVD at a time); only the
factors written are held.

A full fine-tune's other changes (norms, biases, matrices that are not Linear/Embedding) are
carried as :mod:`spectra.decide.carry` says, or refused. A resize (adapter input) keeps LoRA
modules only; an adapter with ``modules_to_save`` is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spectra.decide import carry as carry_mod
from spectra.decide.adapter_files import PEFT_PREFIX, lora_tensors, write_adapter
from spectra.decide.layouts import module_layouts
from spectra.decide.peft_config import check_unique_targets, lora_config_dict
from spectra.decide.rank import ModuleSpectrum, choose_ranks
from spectra.decide.truncate import SvdRoute, truncate
from spectra.engine.svd import spectrum
from spectra.errors import OptionError, UnsupportedFormatError
from spectra.io import open_tensors
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream, stream_difference
from spectra.loaders import open_checkpoint
from spectra.loaders.base import CheckpointReader, LoadOptions, ModuleInfo
from spectra.loaders.lora_describe import LAYOUT_TEXT
from spectra.update import ModuleUpdate

SIDECAR = "spectra_extract.json"
_WRITABLE = ("linear", "embedding", "conv1d")
_RESIZABLE = ("lora", "dora", "multilora")


@dataclass(frozen=True)
class ExtractOptions:
    """How to choose ranks and compute the truncation.

    Attributes:
        rank: One rank for every module (or None).
        energy: τ: each module its k_τ (or None).
        budget: Total adapter parameters Σ r·(out + in) (or None).
        max_rank: Upper limit with ``energy`` / ``budget``.
        svd: ``"exact"`` or ``"randomized"`` (only with ``rank``).
        assume_linear: Take every 2-D weight as nn.Linear when BASE has no config.json.
        modules: Regex (``re.search``): only these matrices of a full fine-tune become LoRA;
            the other changed ones are saved whole (``modules_to_save``).
        save_dtype: dtype of the stored factors.
    """

    rank: int | None = None
    energy: float | None = None
    budget: int | None = None
    max_rank: int | None = None
    svd: SvdRoute = "exact"
    assume_linear: bool = False
    modules: str | None = None
    save_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        given = [n for n in ("rank", "energy", "budget") if getattr(self, n) is not None]
        if len(given) != 1:
            raise OptionError("pass exactly one of --rank, --energy, --budget")
        if self.rank is not None and self.rank < 1:
            raise OptionError(f"--rank must be at least 1, got {self.rank}")
        if self.svd not in ("exact", "randomized"):
            raise OptionError(f"--svd must be exact or randomized, got {self.svd!r}")
        if self.svd == "randomized" and self.rank is None:
            raise OptionError("--svd randomized needs --rank (energy and budget need every σ)")


@dataclass(frozen=True)
class ExtractedModule:
    """One adapted module: its rank, layout and relative reconstruction error."""

    module: str
    shape: tuple[int, int]
    layout: str
    rank: int
    relative_error: float
    energy: float  # ‖ΔW‖_F²


@dataclass
class ExtractResult:
    """What was written.

    Attributes:
        out: The adapter directory.
        modules: The adapted modules.
        modules_to_save: Modules saved whole.
        lora_bias: Modules whose changed bias travels as ``lora_B.bias``.
        unchanged: Matrix modules whose ΔW is zero (not adapted).
        params: LoRA parameters written, Σ r·(p + q).
        svd: The SVD route.
        notes: One line each.
    """

    out: Path
    modules: list[ExtractedModule]
    modules_to_save: list[str] = field(default_factory=list)
    lora_bias: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    params: int = 0
    svd: str = "exact"
    notes: list[str] = field(default_factory=list)

    @property
    def relative_error(self) -> float:
        """√(Σ tail energy / Σ ‖ΔW‖_F²) over the adapted modules."""
        total = sum(m.energy for m in self.modules)
        tail = sum(m.energy * m.relative_error**2 for m in self.modules)
        return (tail / total) ** 0.5 if total > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "svd": self.svd,
            "params": self.params,
            "relative_error": self.relative_error,
            "modules": [
                {"module": m.module, "shape": list(m.shape), "layout": m.layout,
                 "rank": m.rank, "relative_error": m.relative_error}
                for m in self.modules
            ],
            "modules_to_save": self.modules_to_save,
            "lora_bias": self.lora_bias,
            "unchanged": self.unchanged,
            "notes": self.notes,
        }  # fmt: skip


def extract(
    ckpt: Path,
    out: Path,
    *,
    base: Path | None = None,
    options: ExtractOptions,
    progress: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Write a PEFT LoRA adapter reproducing ``ckpt`` at the chosen ranks (module docstring).

    Args:
        ckpt: A full fine-tune (needs ``base``) or a LoRA / DoRA / MultiLoRA adapter.
        out: The adapter directory to write (replaced atomically).
        base: The base checkpoint.
        options: Ranks and SVD route.
        progress: Called with one line per module.

    Raises:
        SpectraError: Bad input: see the options, the loaders and :mod:`spectra.decide.carry`.
    """
    base_src = open_tensors(base) if base is not None else None
    reader = open_checkpoint(ckpt, base=base_src, options=LoadOptions())
    infos = reader.modules()
    adapted, carry = _what_to_adapt(reader, infos, ckpt, base, base_src, options)
    shapes = {i.module: i.shape for i in infos if i.module in adapted}
    ranks = _ranks(reader, shapes, options, progress)
    check_unique_targets(list(shapes), [i.module for i in infos])
    result = ExtractResult(out=out, modules=[], svd=options.svd, notes=carry.notes)
    tensors: dict[str, torch.Tensor] = {}
    for module in sorted(shapes):
        update = reader.update(module)
        r = ranks[module] if ranks is not None else _rank_for(update, options.rank or 0)
        if r == 0:
            result.unchanged.append(module)
            continue
        t = truncate(update, r, svd=options.svd)
        del update
        tensors |= lora_tensors(module, t.left, t.right, adapted[module], options.save_dtype)
        result.modules.append(
            ExtractedModule(module, shapes[module], adapted[module], r, t.relative_error, t.energy)
        )
        result.params += r * sum(shapes[module])
        if progress:
            progress(f"{module}: rank {r}, relative error {t.relative_error:.3g}")
    _add_carried(tensors, carry, result, ckpt, base_src, options.save_dtype)
    config = lora_config_dict(
        {m.module: m.rank for m in result.modules},
        modules_to_save=result.modules_to_save,
        extra={
            "lora_bias": bool(result.lora_bias),
            "fan_in_fan_out": any(m.layout == "conv1d" for m in result.modules),
            "base_model_name_or_path": None if base is None else str(base),
        },
    )
    write_adapter(out, tensors, config, (SIDECAR, result.as_dict()))
    return result


def _what_to_adapt(
    reader: CheckpointReader,
    infos: list[ModuleInfo],
    ckpt: Path,
    base: Path | None,
    base_src: TensorSource | None,
    options: ExtractOptions,
) -> tuple[dict[str, str], carry_mod.Carry]:
    """(module → layout of every module written as LoRA, what else travels)."""
    if reader.kind == "full":
        assert base is not None and base_src is not None
        layouts, note = module_layouts(
            base, [i.module for i in infos], assume_linear=options.assume_linear
        )
        select = _selector(options.modules)
        adapted = {
            m: lay for m, lay in layouts.items() if lay in ("linear", "embedding") and select(m)
        }
        carry = carry_mod.plan_carry(open_tensors(ckpt), base_src, adapted, layouts)
        for m in carry.demoted:
            adapted.pop(m)
        carry.notes.insert(0, note)
        return adapted, carry
    if reader.kind in _RESIZABLE:
        if options.modules is not None:
            raise OptionError(
                "--modules selects matrices of a full fine-tune; a resize keeps every module"
            )
        return _adapter_layouts(reader, infos), carry_mod.Carry()
    raise UnsupportedFormatError(
        f"extract reads full checkpoints and LoRA/DoRA/MultiLoRA adapters, not {reader.kind!r}",
        path=ckpt,
    )


def _ranks(
    reader: CheckpointReader,
    shapes: dict[str, tuple[int, int]],
    options: ExtractOptions,
    progress: Callable[[str], None] | None,
) -> dict[str, int] | None:
    """Module → rank (0: ΔW is zero) from a first pass over the spectra (``energy`` /
    ``budget``); None for one ``rank`` (checked here against every shape)."""
    if options.rank is not None:
        largest = max((min(s) for s in shapes.values()), default=0)
        if options.rank > largest:
            raise OptionError(
                f"--rank {options.rank} is larger than every adapted matrix allows (the largest "
                f"min(out, in) is {largest}); pass a smaller --rank"
            )
        return None
    spectra = []
    for m in sorted(shapes):
        values = spectrum(reader.update(m)).values.to(torch.float64)
        spectra.append(ModuleSpectrum(m, shapes[m], values))
        if progress:
            progress(f"{m}: spectrum")
    return choose_ranks(
        spectra, energy=options.energy, budget=options.budget, max_rank=options.max_rank
    )[0]


def _selector(pattern: str | None) -> Callable[[str], bool]:
    if pattern is None:
        return lambda _: True
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise OptionError(f"--modules {pattern!r} is not a valid regex ({e})") from e
    return lambda name: compiled.search(name) is not None


def _rank_for(update: ModuleUpdate, rank: int) -> int:
    """``rank`` clipped to min(out, in) and to a factored ΔW's inner size (the truncation is
    then exact); 0 when ΔW is exactly zero."""
    rank = min(rank, *update.shape)
    if update.factored:
        assert update.left is not None and update.right is not None
        zero = not (bool(update.left.any()) and bool(update.right.any()))
        return 0 if zero else min(rank, update.inner_rank)
    assert update.dense is not None
    return rank if bool(update.dense.any()) else 0


def _adapter_layouts(reader: CheckpointReader, infos: list[ModuleInfo]) -> dict[str, str]:
    """Layout of each module of an adapter being resized; refuses what cannot be rewritten."""
    if reader.config.get("modules_to_save"):
        raise UnsupportedFormatError(
            "this adapter saves whole modules (modules_to_save); resizing keeps LoRA modules "
            "only: remove them from the adapter first, or extract from the merged model",
            path=reader.path,
        )
    by_text = {text: layout for layout, text in LAYOUT_TEXT.items()}
    layouts = {
        i.module: by_text.get(i.detail.get("layout", LAYOUT_TEXT["linear"]), "conv") for i in infos
    }
    conv = [m for m, lay in layouts.items() if lay not in _WRITABLE]
    if conv:
        raise UnsupportedFormatError(
            f"resizing convolution LoRA modules is not supported yet: {conv[0]!r}", path=reader.path
        )
    return layouts


def _add_carried(
    tensors: dict[str, torch.Tensor],
    carry: carry_mod.Carry,
    result: ExtractResult,
    ckpt: Path,
    base: TensorSource | None,
    dtype: torch.dtype,
) -> None:
    """Add ``lora_B.bias`` (b_tuned − b_base, s = 1) and ``modules_to_save`` tensors (as
    stored in TUNED)."""
    if not (carry.lora_bias or carry.modules_to_save):
        return
    assert base is not None
    tuned, base_stream = TensorStream(open_tensors(ckpt)), TensorStream(base)
    with_lora = {m.module for m in result.modules}
    saved = dict(carry.modules_to_save)
    for module, tkey in sorted(carry.lora_bias.items()):
        if module not in with_lora:  # weight unchanged, bias changed: save the module whole
            prefix = tkey.rpartition(".")[0]
            saved[module] = {f"{module}.{p}": f"{prefix}.{p}" for p in ("weight", "bias")}
            continue
        delta = stream_difference(tuned, tkey, base_stream, f"{module}.bias", torch.float64)
        tensors[f"{PEFT_PREFIX}{module}.lora_B.bias"] = delta.reshape(-1).to(dtype)
        result.lora_bias.append(module)
    if result.lora_bias:  # PEFT gives every adapted module a lora_B.bias: zeros where unchanged
        for m in result.modules:
            key = f"{PEFT_PREFIX}{m.module}.lora_B.bias"
            out_features = m.shape[0]
            tensors.setdefault(key, torch.zeros(out_features, dtype=dtype))
    for module, keys in sorted(saved.items()):
        for bkey, tkey in sorted(keys.items()):
            tensors[PEFT_PREFIX + bkey] = tuned.source.get(tkey).clone()
        result.modules_to_save.append(module)
