"""What each module of a kohya / LyCORIS file is: its algorithm, keys, scale, ΔW shape and
weight decomposition, read from key names, shapes and the scalar ``alpha`` tensors only (the
key table is in :mod:`spectra.loaders.kohya`). Forming ΔW from these records is
:class:`spectra.loaders.kohya.KohyaReader`'s job.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spectra.errors import AdapterConfigError, UnsupportedFormatError
from spectra.io.source import TensorSource
from spectra.loaders.align import flat_shape, refuse_zero_sized
from spectra.loaders.base import LoadReport
from spectra.loaders.dora import MagnitudeAxis, dora_scale_axis
from spectra.loaders.lora_scaling import alpha_or_rank, lora_scaling, scaling_rule_text
from spectra.loaders.lycoris import LOHA_KEYS, LOKR_KEYS, lycoris_scale
from spectra.update import Kind

Algo = Literal["lora", "loha", "lokr", "full"]
LORA_KEYS = ("lora_down.weight", "lora_up.weight")
REFUSED = {
    "lora_mid.weight": "a Tucker (CP) conv decomposition (lora_mid)",
    "hada_t1": "a Tucker (CP) LoHa decomposition (hada_t1/t2)",
    "hada_t2": "a Tucker (CP) LoHa decomposition (hada_t1/t2)",
    "lokr_t2": "a Tucker (CP) LoKr decomposition (lokr_t2)",
    "oft_blocks": "OFT, a multiplicative update",
    "oft_diag": "OFT, a multiplicative update",
    "oft_R": "BOFT, a multiplicative update",
    "on_input": "IA³, a rescaling of activations",
    "a1.weight": "GLoRA",
}
DORA = "dora_scale"


@dataclass(frozen=True)
class KohyaModule:
    """One module of the file: its algorithm, keys, scale and ΔW shape."""

    name: str  # kohya name, as stored
    algo: Algo
    keys: dict[str, str]  # param → key
    r: int | None
    scale: float
    scaling_text: str
    shape: tuple[int, int]  # (out, in·kh·kw)
    rank_text: str
    dora: tuple[str, MagnitudeAxis, int] | None = None  # (dora_scale key, axis, kernel)


def kohya_kind(keys: list[str]) -> Kind | None:
    """The kind of a file from its key names alone: ``"loha"`` / ``"lokr"`` when every module
    is one, ``"kohya"`` for kohya LoRA and mixed LyCORIS files, None when no key is a kohya /
    LyCORIS module parameter (used by detection)."""
    params = {k.split(".", 1)[1] for k in keys if "." in k}
    if not params & {*LORA_KEYS, *LOHA_KEYS, *LOKR_KEYS, *REFUSED, DORA}:
        return None
    has = [bool(params & set(group)) for group in (LORA_KEYS, LOHA_KEYS, LOKR_KEYS)]
    if has == [False, True, False]:
        return "loha"
    if has == [False, False, True]:
        return "lokr"
    return "kohya"


class KohyaModules:
    """Reads the modules of one kohya / LyCORIS file (names, shapes, alphas; no factor data).

    Args:
        source: The opened file.
        path: The file, named in errors.
        report: Receives skipped keys and notes.
    """

    def __init__(self, source: TensorSource, path: Path, report: LoadReport):
        self._source, self.path, self.report = source, path, report

    def _with_dora(self, m: KohyaModule, params: dict[str, str]) -> KohyaModule:
        """``m`` with its ``dora_scale`` (key, axis, kernel), when it has one."""
        key = params.get(DORA)
        if key is None:
            return m
        shape = tuple(self._source.shape(key))
        axis = dora_scale_axis(shape, m.shape[0])
        kernel = 1
        if axis is MagnitudeAxis.INPUT:
            in_channels = shape[1]
            down = params.get("lora_down.weight")
            if down is not None:  # LoRA: the input channels are lora_down's dimension 1
                ok = self._source.shape(down)[1] == in_channels
            else:
                ok = m.shape[1] % in_channels == 0
            kernel = m.shape[1] // in_channels if ok else 0
            axis = axis if ok else None
        if axis is None:
            raise AdapterConfigError(
                f"dora_scale has shape {shape}; for this module's ΔW {m.shape} it must be "
                f"(1, in[, 1, 1]) (one magnitude per input channel) or ({m.shape[0]}, 1[, 1, 1]) "
                "(per output channel); the file is inconsistent, save it again",
                path=self.path,
                key=key,
            )
        return dataclasses.replace(m, dora=(key, axis, kernel))

    def collect(self) -> dict[str, dict[str, str]]:
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

    def module(self, name: str, params: dict[str, str]) -> KohyaModule | None:
        """Classify and validate one module's tensors; None for 1-D-only modules (norms)."""
        if all(len(self._source.shape(k)) <= 1 for k in params.values()):
            self.report.skipped_1d.extend(sorted(params.values()))
            return None
        for param, why in REFUSED.items():
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
        refuse_zero_sized(self._source, params.values(), path=self.path)
        alpha = self._alpha(params.get("alpha"))
        if any(p in params for p in LORA_KEYS):
            return self._with_dora(self._lora(name, params, alpha), params)
        if any(p in params for p in LOHA_KEYS):
            return self._with_dora(self._loha(name, params, alpha), params)
        if any(p in params for p in LOKR_KEYS):
            return self._with_dora(self._lokr(name, params, alpha), params)
        if "diff" in params:
            return self._with_dora(self._full(name, params), params)
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

    def _lora(self, name: str, params: dict[str, str], alpha: float | None) -> KohyaModule:
        down, up = self._need(name, params, LORA_KEYS)
        r = down[0] if down else 0
        if len(up) < 2 or up[1] != r or any(k != 1 for k in up[2:]) or len(down) < 2:
            self._bad_shapes(name, params, LORA_KEYS, "down (r, in[, kh, kw]), up (out, r[, 1, 1])")
        a = alpha_or_rank(alpha, r)
        text = scaling_rule_text(a, r, use_rslora=False) + _missing(alpha)
        shape = (up[0], math.prod(down[1:]))
        return KohyaModule(name=name, algo="lora", keys=params, r=r,
                           scale=lora_scaling(a, r, use_rslora=False), scaling_text=text,
                           shape=shape, rank_text=f"rank ≤ r = {r}")  # fmt: skip

    def _loha(self, name: str, params: dict[str, str], alpha: float | None) -> KohyaModule:
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
        rank_text = (
            f"LoHa: rank ≤ r1·r2 = {r1}·{r2} (≤ {bound}); dense, not low-rank in the LoRA sense"
        )
        return KohyaModule(name=name, algo="loha", keys=params, r=r1, scale=scale,
                           scaling_text=text, shape=shape, rank_text=rank_text)  # fmt: skip

    def _lokr(self, name: str, params: dict[str, str], alpha: float | None) -> KohyaModule:
        w1, r1 = self._kron_shape(name, params, "1")
        w2, r2 = self._kron_shape(name, params, "2")
        r = r1 if r1 is not None else r2  # LyCORIS make_module_from_state_dict: w1_a first
        scale, text = lycoris_scale(alpha, r)
        b1 = min(w1) if r1 is None else min(r1, *w1)
        b2 = min(w2) if r2 is None else min(r2, *w2)
        shape = (w1[0] * w2[0], w1[1] * w2[1])
        rank_text = f"LoKr: rank = rank(w1)·rank(w2) ≤ {b1}·{b2} = {b1 * b2}; dense"
        return KohyaModule(name=name, algo="lokr", keys=params, r=r, scale=scale,
                           scaling_text=text, shape=shape, rank_text=rank_text)  # fmt: skip

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

    def _full(self, name: str, params: dict[str, str]) -> KohyaModule:
        (diff,) = self._need(name, params, ("diff",))
        if len(diff) < 2:
            self._bad_shapes(name, params, ("diff",), "diff (out, in[, kh, kw])")
        return KohyaModule(name=name, algo="full", keys=params, r=None, scale=1.0,
                           scaling_text="ΔW stored whole (diff)", shape=flat_shape(diff),
                           rank_text="full diff")  # fmt: skip

    def _bad_shapes(
        self, name: str, params: dict[str, str], keys: tuple[str, ...], want: str
    ) -> None:
        got = ", ".join(f"{k} {tuple(self._source.shape(params[k]))}" for k in keys if k in params)
        raise AdapterConfigError(
            f"module {name!r}: shapes {got} do not fit; expected {want}", path=self.path, key=name
        )

    def report_unused(self, modules: list[KohyaModule]) -> None:
        """Tensors of a module that are not part of its ΔW (biases, norms) go to the report."""
        used = {"lora": {*LORA_KEYS, "alpha", DORA}, "loha": {*LOHA_KEYS, "alpha", DORA},
                "lokr": {*LOKR_KEYS, "alpha", DORA}, "full": {"diff", DORA}}  # fmt: skip
        unused = sorted(k for m in modules for p, k in m.keys.items() if p not in used[m.algo])
        self.report.skipped_1d.extend(k for k in unused if len(self._source.shape(k)) <= 1)
        others = [k for k in unused if len(self._source.shape(k)) > 1]
        if others:
            self.report.notes.append(
                f"{len(others)} tensors are not part of any ΔW and are not analysed, e.g. {others[0]!r}"
            )


def _missing(alpha: float | None) -> str:
    return " (alpha missing or 0: alpha = r)" if alpha is None or alpha == 0 else ""
