"""MultiLoRA checkpoints in spectra's own format (spectra/multilora/format.py), read as factored
updates.

For a module with n parallel LoRA modules of rank r (A_i: (r, in), B_i: (out, r)) and learned
scaling s_i ((out,) per output channel, or one number):

    ΔW = (α / r) · Σ_i diag(s_i) B_i A_i
       = left @ right,  left  = (α/r) · [s_1 ⊙ B_1, …, s_n ⊙ B_n]   (out, n·r),
                        right = [A_1; …; A_n]                        (n·r, in),

where s_i ⊙ B_i scales row o of B_i by s_i[o]. ``groups = (r,)*n`` tells which columns of
``left`` / rows of ``right`` belong to module i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from spectra.errors import AdapterConfigError, FileFormatError
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.loaders.align import align_to_base, refuse_zero_sized
from spectra.loaders.base import FileReader, LoadOptions, ModuleInfo
from spectra.loaders.lora_scaling import lora_scaling, scaling_rule_text
from spectra.multilora.format import (
    SUFFIX_A,
    SUFFIX_B,
    SUFFIX_S,
    SUFFIXES,
    parse_file_config,
    stack_factors,
)
from spectra.update import Kind, ModuleUpdate


@dataclass(frozen=True)
class _Module:
    """One module's keys and its ΔW shape (out, in)."""

    name: str  # as stored in the file
    key_a: str
    key_b: str
    key_s: str
    shape: tuple[int, int]


class MultiLoRAReader(FileReader):
    """A spectra MultiLoRA file (implements CheckpointReader, kind ``"multilora"``).

    Only metadata, key names and shapes are read on construction; :meth:`update` reads one
    module's A, B and s.

    Args:
        path: A ``.safetensors`` or torch (``.pt``/``.pth``/``.bin``) file written by
            :func:`spectra.multilora.format.write_multilora`.
        base: The base model's tensors; when given, module names are mapped to base names and
            ΔW shapes checked (:func:`spectra.loaders.align.align_to_base`).
        options: ``dtype`` is the compute dtype (float32 or float64).

    Attributes:
        path, kind, config, report: See :class:`~spectra.loaders.base.CheckpointReader`;
            ``config`` is the file's config (r, n, lora_alpha, scaling, ...).
    """

    kind: Kind = "multilora"

    def _list_modules(self, base: TensorSource | None, options: LoadOptions) -> None:
        self._cfg = parse_file_config(self._source.metadata, self.path)
        self.config: dict[str, Any] = json.loads(self._cfg.to_json())
        self._scale = lora_scaling(self._cfg.lora_alpha, self._cfg.r, use_rslora=False)
        modules = [self._module(name, keys) for name, keys in sorted(self._collect().items())]
        shapes = {m.name: m.shape for m in modules}
        mapping = align_to_base(
            shapes,
            base,
            path=self.path,
            report=self.report,
            skip_mismatched=options.skip_mismatched,
        )
        self._modules = {mapping[m.name]: m for m in modules if m.name in mapping}

    def modules(self) -> list[ModuleInfo]:
        """Every adapted module, sorted by (base) module name; n, r and scaling in ``detail``."""
        c = self._cfg
        rule = scaling_rule_text(c.lora_alpha, c.r, use_rslora=False)
        scaling = f"{rule}, times learned s_i ({c.scaling})"
        return [
            ModuleInfo(
                module=name,
                shape=m.shape,
                rank=c.n * c.r,
                scaling=scaling,
                detail={
                    "n": c.n,
                    "r": c.r,
                    "scaling": c.scaling,
                    "stored_dtype": str(self._source.dtype(m.key_a)).removeprefix("torch."),
                    **({"file_module": m.name} if m.name != name else {}),
                },
            )
            for name, m in sorted(self._modules.items())
        ]

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module, factored (see the module docstring), in ``options.dtype``.

        Each of A, B, s is widened before any product.

        Raises:
            MissingTensorError: ``module`` is not listed by :meth:`modules`.
        """
        if module not in self._modules:
            raise missing_key(module, self.path, sorted(self._modules))
        m = self._modules[module]
        dtype = self._options.dtype
        a = self._source.get(m.key_a).to(dtype)  # (n, r, in)
        b = self._source.get(m.key_b).to(dtype)  # (n, out, r)
        s = self._source.get(m.key_s).to(dtype)  # (n, out) or (n,)
        n, r = a.shape[0], a.shape[1]
        left, right = stack_factors(a, b, s, self._scale)  # (out, n·r), (n·r, in)
        return ModuleUpdate(
            module=module, shape=m.shape, left=left, right=right, groups=(r,) * n, scaling=s
        )

    def _collect(self) -> dict[str, dict[str, str]]:
        """MultiLoRA keys grouped by module: {module: {suffix: key}}; others to the report."""
        found: dict[str, dict[str, str]] = {}
        others: list[str] = []
        all_keys = self._source.keys()
        for key in all_keys:
            suffix = next((s for s in SUFFIXES if key.endswith(s)), None)
            if suffix is None:
                others.append(key)
            else:
                found.setdefault(key[: -len(suffix)], {})[suffix] = key
        if others:
            self.report.notes.append(
                f"{len(others)} tensors are not MultiLoRA factors and are not analysed, e.g. {others[0]!r}"
            )
        if not found:
            raise AdapterConfigError(
                f"no *{SUFFIX_A} / *{SUFFIX_B} / *{SUFFIX_S} tensors in this MultiLoRA file",
                path=self.path,
            )
        return found

    def _module(self, name: str, keys: dict[str, str]) -> _Module:
        """Check one module's three tensors against each other and the config."""
        for suffix in SUFFIXES:
            if suffix not in keys:
                raise AdapterConfigError(
                    f"module {name!r} has no {name + suffix!r}; each module needs {', '.join(SUFFIXES)}",
                    path=self.path,
                    key=name,
                )
        ka, kb, ks = keys[SUFFIX_A], keys[SUFFIX_B], keys[SUFFIX_S]
        a, b, s = (tuple(self._source.shape(k)) for k in (ka, kb, ks))
        c = self._cfg
        want_s = "(n, out)" if c.scaling == "vector" else "(n,)"
        ok = (
            len(a) == 3
            and len(b) == 3
            and a[0] == b[0] == s[0] == c.n
            and a[1] == b[2] == c.r
            and (s == (c.n, b[1]) if c.scaling == "vector" else s == (c.n,))
        )
        if not ok:
            raise AdapterConfigError(
                f"shapes do not fit the config (n = {c.n}, r = {c.r}, scaling = {c.scaling!r}): "
                f"{ka!r} {tuple(a)}, {kb!r} {tuple(b)}, {ks!r} {tuple(s)}; expected A (n, r, in), "
                f"B (n, out, r), scaling {want_s}",
                path=self.path,
                key=name,
            )
        for key in (ka, kb, ks):
            if not self._source.dtype(key).is_floating_point:
                raise FileFormatError(
                    f"stored as {self._source.dtype(key)}, expected floating point",
                    path=self.path,
                    key=key,
                )
        refuse_zero_sized(self._source, (ka, kb), path=self.path)
        return _Module(name=name, key_a=ka, key_b=kb, key_s=ks, shape=(b[1], a[2]))
