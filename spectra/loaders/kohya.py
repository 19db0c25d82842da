"""kohya / sd-scripts LoRA and LyCORIS (LoCon, LoHa, LoKr, full) files: one module per
flattened name, each with its own algorithm.

Keys are ``<name>.<param>`` with ``<name>`` a kohya name (:mod:`spectra.loaders.kohya_names`).
What each module holds decides what it is:

=========================================  ======================================  ============
params                                     ΔW (out, in·kh·kw)                       structure
=========================================  ======================================  ============
``lora_down.weight`` (r, in[, kh, kw]),    s · up · down, s = alpha / r             factored,
``lora_up.weight`` (out, r[, 1, 1]),       (missing or zero alpha: alpha = r;       rank ≤ r
``alpha`` (scalar)                         sd-scripts ``networks/lora.py``)
``hada_w1_a`` … ``hada_w2_b``, ``alpha``   LoHa (:mod:`spectra.loaders.lycoris`)    dense
``lokr_w1[_a/_b]``, ``lokr_w2[_a/_b]``     LoKr (:mod:`spectra.loaders.lycoris`)    dense
``diff`` (out, in[, kh, kw])               ΔW itself (LyCORIS ``full``)             dense
=========================================  ======================================  ============

A conv ``lora_down`` (r, in, kh, kw) is read as (r, in·kh·kw) and a 1×1 ``lora_up`` as
(out, r): ΔW is the kernel update flattened to (out, in·kh·kw), the layout of every other
reader. Refused, naming the key: Tucker / CP factors (``lora_mid``, ``hada_t1``, ``lokr_t2``),
weight decomposition (``dora_scale``), and the multiplicative or other methods LyCORIS also
writes (OFT / BOFT ``oft_*``, IA³, GLoRA). Biases (``diff_b``, 1-D) are listed as skipped.

With a base, names are mapped to base module paths and shapes checked; without one the kohya
names are kept (and the report says so). ``kind`` is ``"loha"`` or ``"lokr"`` when every module
is of that algorithm, else ``"kohya"``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from spectra.errors import AdapterConfigError, UnsupportedFormatError
from spectra.io import open_tensors
from spectra.io._common import missing_key
from spectra.io.source import TensorSource
from spectra.loaders.align import base_modules, flat_shape
from spectra.loaders.base import LoadOptions, LoadReport, ModuleInfo
from spectra.loaders.kohya_names import map_kohya_names
from spectra.loaders.lora_scaling import alpha_or_rank, lora_scaling, scaling_rule_text
from spectra.loaders.lycoris import LOHA_KEYS, LOKR_KEYS, loha_delta, lokr_delta, lycoris_scale
from spectra.update import Kind, ModuleUpdate

Algo = Literal["lora", "loha", "lokr", "full"]
_LORA_KEYS = ("lora_down.weight", "lora_up.weight")
_REFUSED = {
    "lora_mid.weight": "a Tucker (CP) conv decomposition (lora_mid)",
    "hada_t1": "a Tucker (CP) LoHa decomposition (hada_t1/t2)",
    "hada_t2": "a Tucker (CP) LoHa decomposition (hada_t1/t2)",
    "lokr_t2": "a Tucker (CP) LoKr decomposition (lokr_t2)",
    "dora_scale": "weight decomposition (dora_scale, DoRA-style)",
    "oft_blocks": "OFT, a multiplicative update",
    "oft_diag": "OFT, a multiplicative update",
    "oft_R": "BOFT, a multiplicative update",
    "on_input": "IA³, a rescaling of activations",
    "a1.weight": "GLoRA",
}
_SS_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
            "ss_base_model_version", "ss_sd_model_name")  # fmt: skip
_STRUCTURE: dict[Algo, str] = {
    "lora": "LoRA: factored",
    "loha": "LoHa: dense (materialized)",
    "lokr": "LoKr: dense (materialized)",
    "full": "full diff: dense",
}


@dataclass(frozen=True)
class _Module:
    """One module of the file: its algorithm, keys, scale and ΔW shape."""

    name: str  # kohya name, as stored
    algo: Algo
    keys: dict[str, str]  # param → key
    r: int | None
    scale: float
    scaling_text: str
    shape: tuple[int, int]  # (out, in·kh·kw)
    rank_text: str


def kohya_kind(keys: list[str]) -> Kind | None:
    """The kind of a file from its key names alone: ``"loha"`` / ``"lokr"`` when every module
    is one, ``"kohya"`` for kohya LoRA and mixed LyCORIS files, None when no key is a kohya /
    LyCORIS module parameter (used by detection)."""
    params = {k.split(".", 1)[1] for k in keys if "." in k}
    if not params & {*_LORA_KEYS, *LOHA_KEYS, *LOKR_KEYS, *_REFUSED}:
        return None
    has = [bool(params & set(group)) for group in (_LORA_KEYS, LOHA_KEYS, LOKR_KEYS)]
    if has == [False, True, False]:
        return "loha"
    if has == [False, False, True]:
        return "lokr"
    return "kohya"


class KohyaReader:
    """A kohya / LyCORIS file (implements CheckpointReader; kind ``kohya``, ``loha``, ``lokr``).

    Key names, shapes and the scalar ``alpha`` tensors are read on construction; :meth:`update`
    reads one module's factors.

    Args:
        path: A ``.safetensors`` (usual) or torch file.
        base: The base model's tensors (U-Net, text encoder, or any model); when given, names
            are mapped to its module paths (:func:`~spectra.loaders.kohya_names.map_kohya_names`).
        options: ``dtype`` is the compute dtype.

    Raises:
        UnsupportedFormatError: A module uses a decomposition spectra does not read.
        AdapterConfigError: A module's tensors are incomplete or their shapes do not fit.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        base: TensorSource | None = None,
        options: LoadOptions = LoadOptions(),
    ):
        self.path = Path(path)
        self._source = open_tensors(self.path)
        self._options = options
        self.report = LoadReport()
        found = [self._module(n, params) for n, params in sorted(self._collect().items())]
        modules = [m for m in found if m is not None]
        if not modules:
            raise AdapterConfigError(
                "no module with LoRA, LoHa, LoKr or full-diff tensors in this file",
                path=self.path,
            )
        self._report_unused(modules)
        counts = Counter(m.algo for m in modules)
        self.kind: Kind = _kind(counts)
        if options.kind not in (None, "kohya", self.kind):
            raise UnsupportedFormatError(
                f"--kind {options.kind} was forced but this file holds {dict(counts)} modules; "
                "drop --kind (or pass 'auto' or 'kohya')",
                path=self.path,
            )
        if options.lora_alpha is not None or options.lora_scale is not None:
            self.report.notes.append(
                "--lora-alpha / --lora-scale not used: kohya / LyCORIS files store alpha per module"
            )
        mapping = self._map({m.name: m.shape for m in modules}, base)
        self._modules = {mapping[m.name]: m for m in modules if m.name in mapping}
        meta = self._source.metadata
        self.config: dict[str, Any] = {
            "format": "kohya / LyCORIS",
            "algorithms_in_file": dict(sorted(counts.items())),
            **{k: meta[k] for k in _SS_KEYS if k in meta},
        }

    def modules(self) -> list[ModuleInfo]:
        """Every module, sorted by (base) module name; algorithm and rank bound in ``detail``."""
        return [self._info(name, m) for name, m in sorted(self._modules.items())]

    def update(self, module: str) -> ModuleUpdate:
        """ΔW of one module in ``options.dtype`` (every stored tensor widened first): factored
        for LoRA (left = s·up (out, r), right = down (r, in·kh·kw)), dense otherwise.

        Raises:
            MissingTensorError: ``module`` is not listed by :meth:`modules`.
        """
        if module not in self._modules:
            raise missing_key(module, self.path, sorted(self._modules))
        m = self._modules[module]
        get = self._getter()
        if m.algo == "lora":
            assert m.r is not None
            left = m.scale * get(m.keys["lora_up.weight"]).reshape(m.shape[0], m.r)  # (out, r)
            right = get(m.keys["lora_down.weight"]).reshape(m.r, -1)  # (r, in·kh·kw)
            return ModuleUpdate(module=module, shape=m.shape, left=left, right=right)
        if m.algo == "loha":
            w1_a, w1_b, w2_a, w2_b = (get(m.keys[k]) for k in LOHA_KEYS)
            dense = loha_delta(w1_a, w1_b, w2_a, w2_b, m.scale)
        elif m.algo == "lokr":
            dense = lokr_delta(self._kron_part(m, "1", get), self._kron_part(m, "2", get), m.scale)
        else:
            dense = get(m.keys["diff"]).reshape(m.shape)
        return ModuleUpdate(module=module, shape=m.shape, dense=dense, notes=(m.rank_text,))

    # --- reading -----------------------------------------------------------------------------

    def _getter(self):  # -> Callable[[str], torch.Tensor]
        dtype = self._options.dtype
        return lambda key: self._source.get(key).to(dtype)

    @staticmethod
    def _kron_part(m: _Module, i: str, get) -> torch.Tensor:
        """w_i of a LoKr module: whole, or w_i_a @ w_i_b."""
        whole = m.keys.get(f"lokr_w{i}")
        if whole is not None:
            return get(whole)
        return get(m.keys[f"lokr_w{i}_a"]) @ get(m.keys[f"lokr_w{i}_b"])

    def _collect(self) -> dict[str, dict[str, str]]:
        """{name: {param: key}}; keys without a ``.`` go to the report."""
        found: dict[str, dict[str, str]] = {}
        others: list[str] = []
        keys = self._source.keys()  # TensorSource is not iterable
        for key in keys:
            name, dot, param = key.partition(".")
            if not dot:
                others.append(key)
                continue
            found.setdefault(name, {})[param] = key
        if others:
            self.report.notes.append(
                f"{len(others)} tensors are not module parameters and are not analysed, e.g. {others[0]!r}"
            )
        return found

    def _module(self, name: str, params: dict[str, str]) -> _Module | None:
        """Classify and validate one module's tensors; None for 1-D-only modules (norms)."""
        if all(len(self._source.shape(k)) <= 1 for k in params.values()):
            self.report.skipped_1d.extend(sorted(params.values()))
            return None
        for param, why in _REFUSED.items():
            if param in params:
                raise UnsupportedFormatError(
                    f"module {name!r} is {why}, which spectra does not read (it reads kohya LoRA "
                    "and LyCORIS LoCon, LoHa, LoKr and full); convert it to LoRA or merge it "
                    "and compare the merged checkpoint as a full fine-tune",
                    path=self.path,
                    key=params[param],
                )
        for key in params.values():
            if not self._source.dtype(key).is_floating_point:
                raise UnsupportedFormatError(
                    f"stored as {self._source.dtype(key)}: quantized adapters are not read",
                    path=self.path,
                    key=key,
                )
        alpha = self._alpha(params.get("alpha"))
        if any(p in params for p in _LORA_KEYS):
            return self._lora(name, params, alpha)
        if any(p in params for p in LOHA_KEYS):
            return self._loha(name, params, alpha)
        if any(p in params for p in LOKR_KEYS):
            return self._lokr(name, params, alpha)
        if "diff" in params:
            return self._full(name, params)
        raise AdapterConfigError(
            f"module {name!r} has {sorted(params)}: no LoRA (lora_down/lora_up), LoHa (hada_*), "
            "LoKr (lokr_*) or full (diff) tensors; this is not a kohya / LyCORIS file spectra reads",
            path=self.path,
            key=name,
        )

    def _alpha(self, key: str | None) -> float | None:
        if key is None:
            return None
        value = self._source.get(key)
        if value.numel() != 1:
            raise AdapterConfigError(
                f"alpha must be one number, got shape {tuple(value.shape)}", path=self.path, key=key
            )
        return float(value.double().item())

    def _need(
        self, name: str, params: dict[str, str], keys: tuple[str, ...]
    ) -> list[tuple[int, ...]]:
        missing = [k for k in keys if k not in params]
        if missing:
            raise AdapterConfigError(
                f"module {name!r} has {sorted(params)} but no {missing}; the file is incomplete",
                path=self.path,
                key=name,
            )
        return [self._source.shape(params[k]) for k in keys]

    def _lora(self, name: str, params: dict[str, str], alpha: float | None) -> _Module:
        down, up = self._need(name, params, _LORA_KEYS)
        r = down[0] if down else 0
        if len(up) < 2 or up[1] != r or any(k != 1 for k in up[2:]) or len(down) < 2:
            self._bad_shapes(
                name, params, _LORA_KEYS, "down (r, in[, kh, kw]), up (out, r[, 1, 1])"
            )
        a = alpha_or_rank(alpha, r)
        text = scaling_rule_text(a, r, use_rslora=False) + _missing(alpha)
        shape = (up[0], math.prod(down[1:]))
        return _Module(name, "lora", params, r, lora_scaling(a, r, use_rslora=False), text, shape,
                       f"rank ≤ r = {r}")  # fmt: skip

    def _loha(self, name: str, params: dict[str, str], alpha: float | None) -> _Module:
        w1_a, w1_b, w2_a, w2_b = self._need(name, params, LOHA_KEYS)
        ok = all(len(s) == 2 for s in (w1_a, w1_b, w2_a, w2_b))
        if not (ok and w1_a[1] == w1_b[0] and w2_a[1] == w2_b[0] and w1_a[0] == w2_a[0]
                and w1_b[1] == w2_b[1]):  # fmt: skip
            self._bad_shapes(
                name, params, LOHA_KEYS, "w1_a (out, r), w1_b (r, in), w2_a (out, r), w2_b (r, in)"
            )
        r1, r2 = w1_b[0], w2_b[0]
        scale, text = lycoris_scale(alpha, r1)  # LyCORIS: lora_dim = hada_w1_b.shape[0]
        shape = (w1_a[0], w1_b[1])
        bound = min(r1 * r2, *shape)
        return _Module(name, "loha", params, r1, scale, text, shape,
                       f"LoHa: rank ≤ r1·r2 = {r1}·{r2} (≤ {bound}); dense, not low-rank in the LoRA sense")  # fmt: skip

    def _lokr(self, name: str, params: dict[str, str], alpha: float | None) -> _Module:
        w1, r1 = self._kron_shape(name, params, "1")
        w2, r2 = self._kron_shape(name, params, "2")
        r = r1 if r1 is not None else r2  # LyCORIS make_module_from_state_dict: w1_a first
        scale, text = lycoris_scale(alpha, r)
        b1 = min(w1) if r1 is None else min(r1, *w1)
        b2 = min(w2) if r2 is None else min(r2, *w2)
        shape = (w1[0] * w2[0], w1[1] * w2[1])
        return _Module(name, "lokr", params, r, scale, text, shape,
                       f"LoKr: rank = rank(w1)·rank(w2) ≤ {b1}·{b2} = {b1 * b2}; dense")  # fmt: skip

    def _kron_shape(
        self, name: str, params: dict[str, str], i: str
    ) -> tuple[tuple[int, int], int | None]:
        """((rows, cols·kh·kw) of w_i, inner rank or None when stored whole)."""
        whole = f"lokr_w{i}"
        if whole in params:
            s = self._source.shape(params[whole])
            if len(s) < 2 or (i == "1" and len(s) != 2):
                self._bad_shapes(name, params, (whole,), "w1 (a, c), w2 (b, d[, kh, kw])")
            return flat_shape(s), None
        a, b = self._need(name, params, (f"lokr_w{i}_a", f"lokr_w{i}_b"))
        if len(a) != 2 or len(b) != 2 or a[1] != b[0]:
            self._bad_shapes(
                name, params, (f"lokr_w{i}_a", f"lokr_w{i}_b"), "w_a (rows, r), w_b (r, cols)"
            )
        return (a[0], b[1]), a[1]

    def _full(self, name: str, params: dict[str, str]) -> _Module:
        (diff,) = self._need(name, params, ("diff",))
        if len(diff) < 2:
            self._bad_shapes(name, params, ("diff",), "diff (out, in[, kh, kw])")
        return _Module(
            name, "full", params, None, 1.0, "ΔW stored whole (diff)", flat_shape(diff), "full diff"
        )

    def _bad_shapes(
        self, name: str, params: dict[str, str], keys: tuple[str, ...], want: str
    ) -> None:
        got = ", ".join(f"{k} {tuple(self._source.shape(params[k]))}" for k in keys if k in params)
        raise AdapterConfigError(
            f"module {name!r}: shapes {got} do not fit; expected {want}", path=self.path, key=name
        )

    def _report_unused(self, modules: list[_Module]) -> None:
        """Tensors of a module that are not part of its ΔW (biases, norms) go to the report."""
        used = {"lora": {*_LORA_KEYS, "alpha"}, "loha": {*LOHA_KEYS, "alpha"},
                "lokr": {*LOKR_KEYS, "alpha"}, "full": {"diff"}}  # fmt: skip
        unused = sorted(k for m in modules for p, k in m.keys.items() if p not in used[m.algo])
        self.report.skipped_1d.extend(k for k in unused if len(self._source.shape(k)) <= 1)
        others = [k for k in unused if len(self._source.shape(k)) > 1]
        if others:
            self.report.notes.append(
                f"{len(others)} tensors are not part of any ΔW and are not analysed, e.g. {others[0]!r}"
            )

    # --- names and what the user sees ----------------------------------------------------------

    def _map(self, shapes: dict[str, tuple[int, int]], base: TensorSource | None) -> dict[str, str]:
        if base is None:
            self.report.notes.append(
                "no BASE given: modules keep kohya's flattened names (lora_unet_…, '_' for '.'); "
                "pass the base model to map them to module paths and check shapes"
            )
            return {n: n for n in shapes}
        base_shapes = {m: flat_shape(base.shape(k)) for m, k in base_modules(base).items()}
        return map_kohya_names(shapes, base_shapes, path=self.path, base_path=base.path,
                               report=self.report)  # fmt: skip

    def _info(self, name: str, m: _Module) -> ModuleInfo:
        first = next(iter(m.keys.values()))
        detail: dict[str, Any] = {
            "algorithm": m.algo,
            "structure": f"{_STRUCTURE[m.algo]}, {m.rank_text}"
            if m.algo == "lora"
            else m.rank_text,
            "stored_dtype": str(self._source.dtype(first)).removeprefix("torch."),
        }
        if m.r is not None:
            detail["r"] = m.r
        if name != m.name:
            detail["kohya_name"] = m.name
        rank = m.r if m.algo == "lora" else None
        return ModuleInfo(
            module=name, shape=m.shape, rank=rank, scaling=m.scaling_text, detail=detail
        )


def _kind(counts: Counter[Algo]) -> Kind:
    if set(counts) == {"loha"}:
        return "loha"
    if set(counts) == {"lokr"}:
        return "lokr"
    return "kohya"


def _missing(alpha: float | None) -> str:
    return " (alpha missing or 0: alpha = r)" if alpha is None or alpha == 0 else ""
