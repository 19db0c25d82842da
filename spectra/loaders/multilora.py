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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectra.errors import AdapterConfigError, FileFormatError, UnsupportedFormatError
from spectra.io import open_tensors
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.loaders.align import align_to_base
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.loaders.lora_scaling import lora_scaling, scaling_rule_text
from spectra.multilora.format import (
    FORMAT_VERSION,
    SUFFIX_A,
    SUFFIX_B,
    SUFFIX_S,
    SUFFIXES,
    MultiLoRAFileConfig,
    is_multilora_metadata,
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


class MultiLoRAReader:
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

    def __init__(
        self,
        path: str | Path,
        *,
        base: TensorSource | None = None,
        options: LoadOptions = LoadOptions(),
    ):
        self.path = Path(path)
        self._options = options
        self._source = open_tensors(self.path)
        self._cfg = parse_file_config(self._source.metadata, self.path)
        self.config: dict[str, Any] = json.loads(self._cfg.to_json())
        self._scale = lora_scaling(self._cfg.lora_alpha, self._cfg.r, use_rslora=False)
        self.report = LoadReport()
        modules = [self._module(name, keys) for name, keys in sorted(self._collect().items())]
        shapes = {m.name: m.shape for m in modules}
        mapping = align_to_base(shapes, base, path=self.path, report=self.report)
        self._modules = {mapping[m.name]: m for m in modules}

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
        return _Module(name, ka, kb, ks, (b[1], a[2]))


def parse_file_config(metadata: Mapping[str, str], path: Path) -> MultiLoRAFileConfig:
    """The validated ``config`` of a MultiLoRA file's metadata.

    Raises:
        FileFormatError: The metadata does not mark a spectra MultiLoRA file.
        UnsupportedFormatError: A format version this spectra does not read.
        AdapterConfigError: The config is not JSON, or a field is missing or invalid (named).
    """
    if not is_multilora_metadata(metadata):
        raise FileFormatError(
            "no 'format' = 'spectra.multilora' metadata: not a spectra MultiLoRA file; write it "
            "with spectra.multilora.format.write_multilora",
            path=path,
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"MultiLoRA format_version {version!r}; this spectra reads version {FORMAT_VERSION!r}: "
            "upgrade spectra",
            path=path,
            key="format_version",
        )
    try:
        raw = json.loads(metadata.get("config", ""))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, huge int, nesting too deep
        raise AdapterConfigError(
            f"the 'config' metadata is not usable JSON ({type(e).__name__}: {e})",
            path=path,
            key="config",
        ) from e
    if not isinstance(raw, dict):
        raise AdapterConfigError(
            "the 'config' metadata must be a JSON object", path=path, key="config"
        )
    return _config_from_json(raw, path)


def _config_from_json(raw: dict[str, Any], path: Path) -> MultiLoRAFileConfig:
    def need(name: str, ok: bool, what: str) -> None:
        if not ok:
            raise AdapterConfigError(
                f"config field {name!r} must be {what}, got {raw.get(name)!r}",
                path=path,
                key=f"config.{name}",
            )

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    r, n, alpha, scaling = raw.get("r"), raw.get("n"), raw.get("lora_alpha"), raw.get("scaling")
    need("r", is_int(r), "a positive integer")
    need("n", is_int(n), "a positive integer")
    number = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    need("lora_alpha", number and math.isfinite(alpha), "a finite number")  # type: ignore[arg-type]
    need("scaling", scaling in ("vector", "scalar"), "'vector' or 'scalar'")
    targets = raw.get("target_modules") or []
    need(
        "target_modules",
        isinstance(targets, list) and all(isinstance(t, str) for t in targets),
        "a list of strings",
    )
    need(
        "parameter_matched", isinstance(raw.get("parameter_matched", False), bool), "true or false"
    )
    base_model = raw.get("base_model")
    need("base_model", base_model is None or isinstance(base_model, str), "a string or null")
    return MultiLoRAFileConfig(
        r=r,  # type: ignore[arg-type]
        n=n,  # type: ignore[arg-type]
        lora_alpha=float(alpha),  # type: ignore[arg-type]
        scaling=scaling,  # type: ignore[arg-type]
        target_modules=tuple(targets),
        parameter_matched=raw.get("parameter_matched", False),
        base_model=base_model,
    )
