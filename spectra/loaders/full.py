"""Full fine-tuning: ΔW = W_tuned − W_base for every weight matrix both checkpoints hold.

Which tensors are modules (**choice**, documented for users):

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
:class:`spectra.loaders.stream.TensorStream` (plain reads into a reused staging buffer, no
memory map left resident), so reading a model-sized pair module by module holds one widened
ΔW plus one stored tensor at a time, whatever the checkpoint or shard size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from spectra.errors import AmbiguousInputError, CheckpointMismatchError
from spectra.io import open_tensors
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.loaders.align import align_modules
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.loaders.stream import TensorStream, stream_difference
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
        tuned_mats = _matrices(self._tuned, self.report, record=True)
        base_mats = _matrices(self._base, LoadReport(), record=False)
        # base module name -> (tuned key, base key)
        self._pairs = self._pair(tuned_mats, base_mats)
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
        """Align module names, record one-sided keys, refuse shape mismatches."""
        names = {k[: -len(_WEIGHT)]: k for k in tuned}
        base_names = {k[: -len(_WEIGHT)]: k for k in base}
        alignment = align_modules(names, base_names, path=self.path, base_path=self._base.path)
        self.report.only_in_tuned.extend(names[n] for n in alignment.unmatched)
        self.report.only_in_base.extend(base_names[b] for b in alignment.unused_base)
        note = alignment.prefix_note()
        if note:
            self.report.notes.append(note)
        pairs = {b: (names[n], base_names[b]) for n, b in alignment.mapping.items()}
        for tuned_key, base_key in pairs.values():
            ts, bs = self._tuned.shape(tuned_key), self._base.shape(base_key)
            if ts != bs:
                raise CheckpointMismatchError(
                    f"shape {ts} in the tuned checkpoint but {bs} in the base "
                    f"({self._base.path}, key {base_key!r}); this is not a fine-tune of this "
                    "base (or its vocabulary/head was resized): pass the matching base",
                    path=self.path,
                    key=tuned_key,
                )
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


def _matrices(source: TensorSource, report: LoadReport, *, record: bool) -> list[str]:
    """Keys of ``source`` that are modules (see the module docstring); skips go to ``report``
    when ``record`` (the tuned side is the one reported)."""
    matrices: list[str] = []
    other: list[str] = []
    non_float = 0
    keys = source.keys()  # TensorSource is not iterable
    for key in keys:
        dtype, ndim = source.dtype(key), len(source.shape(key))
        if not dtype.is_floating_point:
            non_float += 1
        elif ndim == 1:
            report.skipped_1d.append(key)
        elif ndim >= 2 and key.endswith(_WEIGHT):
            matrices.append(key)
        else:
            other.append(key)
    if record and other:
        report.notes.append(
            f"skipped {len(other)} floating tensors that are not a layer's .weight matrix "
            f"(scalars, embeddings-like parameters), e.g. {other[0]!r}"
        )
    if record and non_float:
        report.notes.append(f"skipped {non_float} non-floating tensors (ids, counters)")
    return matrices
