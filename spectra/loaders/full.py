"""Full fine-tuning: ΔW = W_tuned − W_base for every weight matrix both checkpoints hold.

Which tensors are modules is decided by :func:`spectra.loaders.align.matrix_keys`
(**choice**, documented for users):

* a key ending in ``.weight`` whose tensor is floating point with ndim ≥ 2 is a module, named
  by the key without ``.weight``. Linear and embedding weights are (out, in) already; a
  convolution kernel (out, in, kh, kw[, kd]) is flattened to (out, in·kh·kw[·kd]), the
  layout the conv LoRA literature and PEFT use for its ΔW;
* 1-D floating tensors (biases, norm scales) are listed in ``report.skipped_1d``;
* other floating tensors with ndim ≥ 2 (``pos_embed``, ``cls_token``: parameters that are not
  a layer's weight matrix, where flattening would invent a layout) and non-floating tensors
  (``position_ids``, ``num_batches_tracked``) are skipped and counted in ``report.notes``.

Base and tuned modules are aligned by name (:func:`spectra.loaders.align.align_modules`,
tolerating an added/removed leading prefix), never by order.

Memory: :meth:`FullReader.update` streams the two tensors of one module through
:class:`spectra.io.stream.TensorStream` (plain reads into a reused staging buffer, no
memory map left resident), so reading a model-sized pair module by module holds one widened
ΔW plus one stored tensor at a time, whatever the checkpoint or shard size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from spectra.errors import AmbiguousInputError, CheckpointMismatchError
from spectra.io import open_tensors
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream, stream_difference
from spectra.loaders.align import align_modules, matrix_keys, non_float_matrix_keys
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.update import Kind, ModuleUpdate

_WEIGHT = ".weight"
_SCALING = "dense: W_tuned - W_base"


class FullReader:
    """A fully fine-tuned checkpoint read against its base (implements CheckpointReader).

    Only shapes and dtypes are read on construction; :meth:`update` reads one tensor pair.
    Nothing is cached.

    Attributes:
        path: The tuned checkpoint (file, index or directory).
        kind: ``"full"``.
        config: JSON-able facts: the sources read and the module count.
        report: 1-D tensors skipped, keys on one side only, prefix matches, other skips.
    """

    kind: Kind = "full"

    def __init__(self, path: str | Path, *, base: TensorSource | None, options: LoadOptions):
        if base is None:
            raise AmbiguousInputError(
                "a full checkpoint needs BASE: ΔW = W_tuned - W_base; pass the base model's "
                "checkpoint (e.g. --base path/to/base)",
                path=path,
            )
        self.path = Path(path)
        self._options = options
        self._tuned = open_tensors(self.path)
        self._base = base
        self._tuned_stream, self._base_stream = TensorStream(self._tuned), TensorStream(base)
        self.report = LoadReport()
        tuned_mats = matrix_keys(self._tuned, self.report, record=True)
        base_mats = matrix_keys(self._base, LoadReport(), record=False)
        # base module name -> (tuned key, base key)
        self._pairs = self._pair(
            tuned_mats + non_float_matrix_keys(self._tuned),
            base_mats + non_float_matrix_keys(self._base),
        )
        self.config: dict[str, Any] = {
            "tuned": getattr(self._tuned, "description", str(self.path)),
            "base": getattr(self._base, "description", str(self._base.path)),
            "modules": len(self._pairs),
        }

    def modules(self) -> list[ModuleInfo]:
        """Every matrix in both checkpoints, sorted by base module name; dtypes in ``detail``."""
        return [self._info(m) for m in sorted(self._pairs)]

    def update(self, module: str) -> ModuleUpdate:
        """ΔW = W_tuned − W_base, each operand widened to ``options.dtype`` before subtracting.

        Widening first matters: two bf16 weights that differ by less than a bf16 ulp of their
        magnitude subtract to 0 in bf16 but keep their exact difference in float32.

        Args:
            module: A base module name from :meth:`modules`.

        Returns:
            A dense ModuleUpdate, ``dense``: (out, in) in ``options.dtype`` (conv kernels
            flattened to (out, in·kh·kw)).
        """
        if module not in self._pairs:
            raise missing_key(module, self.path, sorted(self._pairs))
        tuned_key, base_key = self._pairs[module]
        # the caller owns this tensor; nothing else refers to it once returned
        delta = stream_difference(
            self._tuned_stream, tuned_key, self._base_stream, base_key, self._options.dtype
        )  # (out, in·kh·kw)
        return ModuleUpdate(module=module, shape=(delta.shape[0], delta.shape[1]), dense=delta)

    def _pair(self, tuned: list[str], base: list[str]) -> dict[str, tuple[str, str]]:
        """Align module names, record one-sided keys, refuse (or skip) shape mismatches.

        ``tuned`` and ``base`` include the non-floating ``.weight`` matrices, so that an
        integer weight facing a floating one is named (skipped, or refused when it leaves
        nothing) rather than reported as a key on one side only.
        """
        names = {k[: -len(_WEIGHT)]: k for k in tuned}
        base_names = {k[: -len(_WEIGHT)]: k for k in base}
        alignment = align_modules(names, base_names, path=self.path, base_path=self._base.path)
        tuned_dtype, base_dtype = self._tuned.dtype, self._base.dtype
        self.report.only_in_tuned.extend(
            names[n] for n in alignment.unmatched if tuned_dtype(names[n]).is_floating_point
        )
        self.report.only_in_base.extend(
            base_names[b]
            for b in alignment.unused_base
            if base_dtype(base_names[b]).is_floating_point
        )
        note = alignment.prefix_note()
        if note:
            self.report.notes.append(note)
        pairs: dict[str, tuple[str, str]] = {}
        integer: dict[str, str] = {}
        mismatched: dict[str, str] = {}
        errors: list[CheckpointMismatchError] = []
        for n, b in alignment.mapping.items():
            tuned_key, base_key = names[n], base_names[b]
            td, bd = self._tuned.dtype(tuned_key), self._base.dtype(base_key)
            if not (td.is_floating_point and bd.is_floating_point):
                if td.is_floating_point or bd.is_floating_point:  # both integer: not a weight
                    integer[tuned_key] = _dtype_reason(td, bd, self._base.path)
                    errors.append(
                        _dtype_error(self.path, tuned_key, self._base.path, base_key, td, bd)
                    )
                continue
            ts, bs = self._tuned.shape(tuned_key), self._base.shape(base_key)
            if ts != bs:
                error = CheckpointMismatchError(
                    f"shape {ts} in the tuned checkpoint but {bs} in the base "
                    f"({self._base.path}, key {base_key!r}); this is not a fine-tune of this "
                    "base (or its vocabulary/head was resized): pass the matching base, or "
                    "--skip-mismatched to analyse the modules that match",
                    path=self.path,
                    key=tuned_key,
                )
                if not self._options.skip_mismatched:
                    raise error
                mismatched[tuned_key] = f"shape {ts} here, {bs} in the base ({base_key!r})"
                errors.append(error)
                continue
            pairs[b] = (tuned_key, base_key)
        if errors and not pairs:
            raise errors[0]
        if integer:
            self.report.skip(integer, why="not floating point")
        if mismatched:
            self.report.skip(mismatched, why="--skip-mismatched")
        return pairs

    def _info(self, module: str) -> ModuleInfo:
        tuned_key, base_key = self._pairs[module]
        stored = self._tuned.shape(tuned_key)
        detail: dict[str, Any] = {
            "tuned_key": tuned_key,
            "base_key": base_key,
            "tuned_dtype": str(self._tuned.dtype(tuned_key)).removeprefix("torch."),
            "base_dtype": str(self._base.dtype(base_key)).removeprefix("torch."),
        }
        if len(stored) > 2:
            detail["stored_shape"] = list(stored)
        return ModuleInfo(
            module=module,
            shape=(stored[0], math.prod(stored[1:])),
            rank=None,
            scaling=_SCALING,
            detail=detail,
        )


def _dtype_reason(tuned: torch.dtype, base: torch.dtype, base_path: Path) -> str:
    return (
        f"stored as {str(tuned).removeprefix('torch.')} here and "
        f"{str(base).removeprefix('torch.')} in the base ({base_path})"
    )


def _dtype_error(
    path: Path,
    tuned_key: str,
    base_path: Path,
    base_key: str,
    tuned: torch.dtype,
    base: torch.dtype,
) -> CheckpointMismatchError:
    """The refusal when integer-typed weights leave no module to compare."""
    return CheckpointMismatchError(
        f"stored as {str(tuned).removeprefix('torch.')} here, but the base ({base_path}) stores "
        f"{base_key!r} as {str(base).removeprefix('torch.')}: integer weights (quantized, or not "
        "a weight) are not compared, and no other module is left to compare; pass "
        "floating-point (dequantized) checkpoints",
        path=path,
        key=tuned_key,
    )
