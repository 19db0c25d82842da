"""Reading the keys of a LoRA / DoRA tensor file: which key is which factor of which module.

Parsing only: no tensor is read, only key names, shapes and dtypes. The accepted key forms are
the table in :mod:`spectra.loaders.lora_factors`; the result is one :class:`LoraModule` record
per adapted module (keys, layout, rank, scaling, ΔW shape) and the ``modules_to_save`` keys.
Forming ΔW from these records is :class:`spectra.loaders.lora_factors.LoraFileReader`'s job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

from spectra.errors import AdapterConfigError, UnsupportedFormatError
from spectra.io.source import TensorSource
from spectra.loaders.align import refuse_zero_sized
from spectra.loaders.base import LoadReport
from spectra.loaders.lora_scaling import LoraRule

PEFT_PREFIX = "base_model.model."

_FACTOR = re.compile(
    r"^(?P<module>.+?)\.(?P<role>lora_A|lora_B|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector|lora_a|lora_b)(?P<tail>(?:\.[^.]+){0,2})$"
)
# torchtune's DoRA magnitude: ``<m>.magnitude`` (out,), beside ``<m>.lora_a.weight`` / ``lora_b``
_TORCHTUNE_MAGNITUDE = ".magnitude"
# torchtune's factor names, read as PEFT's (same shapes: A (r, in), B (out, r))
_SAME_AS = {"lora_a": "lora_A", "lora_b": "lora_B"}
_SAVED_RAW = re.compile(
    r"^(?P<module>.+)\.modules_to_save\.(?P<adapter>[^.]+)\.(?:(?P<sub>.+)\.)?weight$"
)
_NOT_SAVED = (".original_module.", ".base_layer.")  # base weights in a raw PeftModel state dict

Layout = Literal["linear", "conv1d", "embedding", "conv"]


class Role(Enum):
    """What a key holds for its module."""

    A = "lora_A"
    B = "lora_B"
    EMBEDDING_A = "lora_embedding_A"
    EMBEDDING_B = "lora_embedding_B"
    BIAS = "lora_B.bias"
    MAGNITUDE = "lora_magnitude_vector"


_PAIRS = {False: (Role.A, Role.B), True: (Role.EMBEDDING_A, Role.EMBEDDING_B)}
_PAIR_NAMES = {
    Role.A: "lora_A.weight",
    Role.B: "lora_B.weight",
    Role.EMBEDDING_A: "lora_embedding_A",
    Role.EMBEDDING_B: "lora_embedding_B",
}


@dataclass(frozen=True)
class FactorKey:
    """A parsed LoRA key: its module (PEFT prefix removed), role and adapter name (raw
    ``PeftModel.state_dict()`` keys only)."""

    module: str
    role: Role
    adapter: str | None


@dataclass(frozen=True)
class LoraModule:
    """One adapted module as found in the file: its keys, layout, rank and scaling."""

    name: str  # module path in the file, PEFT prefix removed
    key_a: str
    key_b: str
    key_bias: str | None
    key_magnitude: str | None  # DoRA
    layout: Layout
    r: int
    alpha: float | None
    scaling: float
    scaling_text: str
    shape: tuple[int, int]  # ΔW in the stored layout of the base weight


@dataclass(frozen=True)
class FileKeys:
    """Every key of a LoRA file sorted by what it is.

    Attributes:
        factors: Module (PEFT prefix removed) → {role: key}.
        saved: Saved module (``modules_to_save``) → its weight key.
        adapters: Adapter names seen in raw ``PeftModel`` keys.
        others: Keys of ndim ≠ 1 that are neither (not analysed).
    """

    factors: dict[str, dict[Role, str]]
    saved: dict[str, str]
    adapters: frozenset[str]
    others: tuple[str, ...]


def parse_factor_key(name: str) -> FactorKey | None:
    """The module, role and adapter name of a LoRA factor key (PEFT prefix already removed),
    or None when ``name`` is no LoRA factor."""
    if name.endswith(_TORCHTUNE_MAGNITUDE):
        module = name.removesuffix(_TORCHTUNE_MAGNITUDE)
        return FactorKey(module=module, role=Role.MAGNITUDE, adapter=None) if module else None
    m = _FACTOR.match(name)
    if m is None:
        return None
    parts = m["tail"].split(".")[1:]  # [], [param], [adapter], [adapter, param]
    param = parts[-1] if parts and parts[-1] in ("weight", "bias") else None
    adapter = parts[0] if len(parts) == (2 if param else 1) else None
    if len(parts) == 2 and param is None:
        return None
    role = _SAME_AS.get(m["role"], m["role"])
    if role in ("lora_A", "lora_B") and param in (None, "weight"):
        return FactorKey(module=m["module"], role=Role(role), adapter=adapter)
    if role in ("lora_embedding_A", "lora_embedding_B") and param is None:
        return FactorKey(module=m["module"], role=Role(role), adapter=adapter)
    if role == "lora_B" and param == "bias":
        return FactorKey(module=m["module"], role=Role.BIAS, adapter=adapter)
    if role == "lora_magnitude_vector" and param in (None, "weight"):
        return FactorKey(module=m["module"], role=Role.MAGNITUDE, adapter=adapter)
    return None


def sort_keys(source: TensorSource, rule: LoraRule, report: LoadReport) -> FileKeys:
    """Sort every key of ``source`` into factors, saved modules, 1-D skips (recorded in
    ``report.skipped_1d``) and others."""
    factors: dict[str, dict[Role, str]] = {}
    saved: dict[str, str] = {}
    others: list[str] = []
    adapters: set[str] = set()
    keys = source.keys()  # TensorSource is not iterable
    for key in keys:
        name = key.removeprefix(PEFT_PREFIX)
        parsed = parse_factor_key(name)
        if parsed is not None:
            factors.setdefault(parsed.module, {})[parsed.role] = key
            adapters.update([parsed.adapter] if parsed.adapter else [])
        elif (module := _saved_module(source, rule, name, key, adapters)) is not None:
            saved[module] = key
        elif len(source.shape(key)) == 1:
            report.skipped_1d.append(key)
        else:
            others.append(key)
    for module, roles in list(factors.items()):  # a ``.magnitude`` with no LoRA factors beside
        if set(roles) == {Role.MAGNITUDE} and roles[Role.MAGNITUDE].endswith(
            _TORCHTUNE_MAGNITUDE
        ):  # it is some model's own parameter, not a DoRA magnitude
            key = factors.pop(module)[Role.MAGNITUDE]
            (report.skipped_1d if len(source.shape(key)) == 1 else others).append(key)
    return FileKeys(
        factors=factors, saved=saved, adapters=frozenset(adapters), others=tuple(others)
    )


def _saved_module(
    source: TensorSource, rule: LoraRule, name: str, key: str, adapters: set[str]
) -> str | None:
    """The module name when ``key`` is a whole saved module (modules_to_save), else None."""
    shape, dtype = source.shape(key), source.dtype(key)
    if len(shape) < 2 or not dtype.is_floating_point:
        return None
    raw = _SAVED_RAW.match(name)
    if raw:
        adapters.add(raw["adapter"])
        return raw["module"] + (f".{raw['sub']}" if raw["sub"] else "")
    module = name.removesuffix(".weight")
    dotted = f".{module}."
    if not name.endswith(".weight") or any(w in dotted for w in _NOT_SAVED):
        return None
    # PEFT wraps the module named in modules_to_save; a head with sub-layers saves
    # <name>.<sub>.weight, so the name may be any dotted run of components of the key.
    return module if any(f".{t}." in dotted for t in rule.modules_to_save) else None


def lora_module(
    source: TensorSource,
    rule: LoraRule,
    module: str,
    roles: dict[Role, str],
    *,
    path: Path,
    use_dora: bool,
) -> LoraModule:
    """Validate one module's keys and shapes against each other and the rule.

    ``use_dora``: the file is DoRA (the rule says so, or, when the rule does not say, some
    module stores a magnitude): every module must then store one, else none may.

    Raises:
        AdapterConfigError: A factor is missing, both layouts are mixed, shapes do not fit, the
            rank or the DoRA magnitude disagrees with the rule.
        UnsupportedFormatError: A factor is not floating point (quantized).
    """
    emb = Role.EMBEDDING_A in roles or Role.EMBEDDING_B in roles
    pair = _PAIRS[emb]
    missing = [_PAIR_NAMES[role] for role in pair if role not in roles]
    mixed = emb and (Role.A in roles or Role.B in roles)
    if missing or mixed:
        what = f"no {' and no '.join(map(repr, missing))}" if missing else "both layouts"
        raise AdapterConfigError(
            f"module {module!r} has {sorted(roles.values())} but {what}: each LoRA module "
            "needs one lora_A and one lora_B; the adapter file is incomplete, save it again",
            path=path,
            key=module,
        )
    _check_magnitude(rule, use_dora, module, roles.get(Role.MAGNITUDE), path=path)
    key_a, key_b = roles[pair[0]], roles[pair[1]]
    for key in (key_a, key_b):
        if not source.dtype(key).is_floating_point:
            raise UnsupportedFormatError(
                f"stored as {source.dtype(key)}: quantized adapters are not read; "
                "dequantize and save in float first",
                path=path,
                key=key,
            )
    refuse_zero_sized(source, (key_a, key_b), path=path)
    layout, r, shape = _shapes(source, rule, module, key_a, key_b, emb, path=path)
    expected, where = rule.rank_for(module)
    if expected is not None and r != expected:
        raise AdapterConfigError(
            f"{key_a!r} has rank {r} but the {where} gives r = {expected} for this module; "
            "the config does not belong to these weights",
            path=path,
            key=module,
        )
    s, alpha, text = rule.scaling(module, r)
    return LoraModule(
        name=module, key_a=key_a, key_b=key_b,
        key_bias=roles.get(Role.BIAS), key_magnitude=roles.get(Role.MAGNITUDE),
        layout=layout, r=r, alpha=alpha, scaling=s, scaling_text=text, shape=shape,
    )  # fmt: skip


def uses_dora(rule: LoraRule, keys: FileKeys) -> bool:
    """DoRA as the rule says, or, when it does not say, as the keys show (any magnitude)."""
    if rule.use_dora is not None:
        return rule.use_dora
    return any(Role.MAGNITUDE in roles for roles in keys.factors.values())


def _check_magnitude(
    rule: LoraRule, use_dora: bool, module: str, key: str | None, *, path: Path
) -> None:
    if key is None and use_dora and rule.use_dora is None:
        raise AdapterConfigError(
            f"module {module!r} stores no DoRA magnitude (lora_magnitude_vector / magnitude) "
            "but other modules of this file do; the file is incomplete, save it again",
            path=path,
            key=module,
        )
    if key is not None and not use_dora:
        raise AdapterConfigError(
            f"a DoRA magnitude vector is stored but the {rule.source} has no "
            "use_dora: true; the config does not belong to these weights",
            path=path,
            key=key,
        )
    if key is None and use_dora:
        raise AdapterConfigError(
            f"the {rule.source} says use_dora: true but module {module!r} has no "
            "lora_magnitude_vector; the config does not belong to these weights",
            path=path,
            key=module,
        )


def _shapes(
    source: TensorSource,
    rule: LoraRule,
    module: str,
    key_a: str,
    key_b: str,
    emb: bool,
    *,
    path: Path,
) -> tuple[Layout, int, tuple[int, int]]:
    """(layout, r, ΔW shape in the stored layout) from the factor shapes alone."""
    a, b = source.shape(key_a), source.shape(key_b)
    r = a[0] if a else 0
    if len(a) == 2 and len(b) == 2 and b[1] == r:
        if emb:
            return "embedding", r, (a[1], b[0])  # (n_emb, dim)
        if rule.fan_in_fan_out:
            return "conv1d", r, (a[1], b[0])  # (in, out)
        return "linear", r, (b[0], a[1])  # (out, in)
    conv_b = len(b) == len(a) and len(a) >= 3 and all(k == 1 for k in b[2:])
    if not emb and conv_b and b[1] == r:
        return "conv", r, (b[0], math.prod(a[1:]))  # (out, in·kh·kw)
    raise AdapterConfigError(
        f"factor shapes do not fit a LoRA module: {key_a!r} {tuple(a)}, {key_b!r} "
        f"{tuple(b)}; expected A (r, in) and B (out, r) with the same r (conv: A (r, in, "
        "kh, kw), B (out, r, 1, 1); grouped conv LoRA and loralib's MergedLinear / ConvLoRA "
        "are not read)",
        path=path,
        key=module,
    )
