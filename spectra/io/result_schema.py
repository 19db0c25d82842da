"""The structure of a saved analysis result, checked when one is read back.

``spectra figures --from-json`` and ``spectra report --from-json`` draw from a file that may
have been edited, truncated or crafted. :func:`check_result` checks every field the plotters,
the report and ``diagnose`` read, before any of them runs, so a broken file is refused with one
message naming the file and the field (``modules[3].singular_values[0]``) instead of failing
somewhere inside matplotlib.

The rules follow what :func:`spectra.analysis.analyze` writes (README, "JSON output"):
fields read with ``row["field"]`` are required, fields read with ``row.get("field")`` may be
absent but must have the right type when present, and unknown fields are allowed (newer
writers may add some). Numbers must be finite (NaN is written as null), and counts that size
an allocation are bounded by the shapes they describe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from spectra.errors import FileFormatError

Check = Callable[[Any, str], None]

# Largest matrix side accepted in a result (the widest real layers are ~2^18); the full
# spectrum of a module is allocated from its shape, so a crafted shape must not size it.
MAX_SIDE = 1 << 24
_MAX_INT = 1 << 53  # integers beyond this are not exact in float64 (plot coordinates)
_FIX = "pass a file written by `spectra compare --json`, or write it again"


class _Invalid(Exception):
    """A field is not what the schema says (internal; becomes FileFormatError)."""

    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}")
        self.where, self.what = where, what


def check_result(result: Any, path: str | Path) -> dict[str, Any]:
    """``result`` itself when it has the structure of an analysis result.

    Args:
        result: The parsed JSON of a result file.
        path: The file, named in the error.

    Returns:
        ``result`` (unchanged).

    Raises:
        FileFormatError: A required field is missing, a field has the wrong type or an
            impossible value; the message names the field by its JSON path.
    """
    try:
        _RESULT(result, "")
        _check_spectra(result["modules"])
    except _Invalid as e:
        raise FileFormatError(
            f"not a usable spectra result: {e.what}; {_FIX}", path=path, key=e.where or None
        ) from e
    return result


def _str(v: Any, where: str) -> None:
    if not isinstance(v, str):
        raise _Invalid(where, f"must be a string, got {_kind(v)}")


def _bool(v: Any, where: str) -> None:
    if not isinstance(v, bool):
        raise _Invalid(where, f"must be true or false, got {_kind(v)}")


def _any(v: Any, where: str) -> None:
    """Anything JSON (only shown as text)."""


def _int(minimum: int = 0, maximum: int = _MAX_INT) -> Check:
    def check(v: Any, where: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(where, f"must be an integer, got {_kind(v)}")
        if not minimum <= v <= maximum:
            raise _Invalid(where, f"must be between {minimum} and {maximum}, got {v}")

    return check


def _num(minimum: float = -math.inf) -> Check:
    def check(v: Any, where: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Invalid(where, f"must be a number, got {_kind(v)}")
        # an int beyond 2^53 is not exact as a float (and beyond ~1e308 not a float at all)
        finite = abs(v) <= _MAX_INT if isinstance(v, int) else math.isfinite(v)
        if not finite or v < minimum:
            raise _Invalid(where, f"must be a finite number >= {minimum:g}, got {_kind(v)}")

    return check


def _number_or_flag(v: Any, where: str) -> None:
    if not isinstance(v, bool):
        _num()(v, where)


def _one_of(*allowed: str) -> Check:
    def check(v: Any, where: str) -> None:
        if v not in allowed:
            raise _Invalid(where, f"must be one of {', '.join(allowed)}, got {_kind(v)}")

    return check


def _opt(inner: Check) -> Check:
    """``inner`` or null."""

    def check(v: Any, where: str) -> None:
        if v is not None:
            inner(v, where)

    return check


def _list(item: Check, length: int | None = None) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, list):
            raise _Invalid(where, f"must be a list, got {_kind(v)}")
        if length is not None and len(v) != length:
            raise _Invalid(where, f"must have {length} entries, got {len(v)}")
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")

    return check


def _grid(v: Any, where: str) -> None:
    """A non-empty rectangular list of lists of numbers (null for NaN)."""
    _list(_list(_opt(_num())))(v, where)
    if not v or not v[0] or any(len(row) != len(v[0]) for row in v):
        raise _Invalid(where, "must be a non-empty rectangular grid (rows of equal length)")


def _square_grid(v: Any, where: str) -> None:
    _grid(v, where)
    if len(v) != len(v[0]):
        raise _Invalid(where, f"must be square, got {len(v)} x {len(v[0])}")


def _dict_of(value: Check) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(where, f"must be an object, got {_kind(v)}")
        for k, x in v.items():
            value(x, _join(where, k))

    return check


def _obj(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    """An object with ``required`` fields and, when present, well-typed ``optional`` ones."""

    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(where, f"must be an object, got {_kind(v)}")
        for name, field_check in required.items():
            if name not in v:
                raise _Invalid(_join(where, name), "is missing")
            field_check(v[name], _join(where, name))
        for name, field_check in (optional or {}).items():
            if name in v:
                field_check(v[name], _join(where, name))

    return check


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_opt_num = _opt(_num())
_count = _int(0)

_INPUT = _obj({"label": _str}, {"kind": _str, "path": _str, "config": _any})
_BASE_METRICS = _obj(
    {},
    {
        "amplification": _opt(_num(0.0)),
        "amplification_r": _opt(_count),
        "intruder_count": _opt(_count),
        "intruder_energy": _opt_num,
        "intruder_k": _opt(_count),
        "intruder_eps": _opt_num,
        "intruder_max_cos": _list(_opt_num),
    },
)
_MULTILORA = _obj(
    {"phi_left": _square_grid, "phi_right": _square_grid},
    {"n": _int(1), "r": _int(1), "scaling_norms": _list(_opt_num), "scaling": _any},
)
_MODULE = _obj(
    {
        "module": _str,
        "label": _str,
        "module_type": _str,
        "shape": _list(_int(0, MAX_SIDE), length=2),
        "rank": _count,
        "singular_values": _list(_opt(_num(0.0))),
    },
    {
        "kind": _str,
        "layer": _opt(_int(0, 1 << 31)),
        "notes": _list(_str),
        "structural_zeros": _int(0, MAX_SIDE),
        "truncated": _bool,
        "metrics": _opt(_dict_of(_opt(_number_or_flag))),
        "base_metrics": _opt(_BASE_METRICS),
        "multilora": _opt(_MULTILORA),
        "nonfinite": _bool,
    },
)
_SIMILARITY = _obj(
    {
        "module": _str,
        "a": _str,
        "b": _str,
        "side": _one_of("left", "right"),
        "phi": _grid,
    },
    {
        "k": _int(1),
        "principal_angles": _list(_opt_num),
        "grassmann_distance": _opt_num,
    },
)
_SUMMARY = _obj(
    {
        "label": _str,
        "mean_top1_energy": _opt_num,
        "mean_effective_rank": _opt_num,
        "mean_stable_rank": _opt_num,
        "mean_phi": _dict_of(_obj({}, {"left": _opt_num, "right": _opt_num})),
    },
    {"kind": _str, "modules": _count, "nonfinite_modules": _count},
)
_SETTINGS = _obj(
    {"top_k": _int(1)},
    {
        "dtype": _str,
        "device": _str,
        "modules": _opt(_str),
        "against_base": _bool,
        "intruder_k": _int(1),
        "intruder_eps": _num(),
        "similarity": _bool,
        "svd": _str,
    },
)
_SKIPPED = _dict_of(
    _obj(
        {
            "skipped_1d": _count,
            "only_in_base": _list(_str),
            "only_in_tuned": _list(_str),
            "notes": _list(_str),
        }
    )
)
_RESULT = _obj(
    {
        "inputs": _list(_INPUT),
        "modules": _list(_MODULE),
        "similarity": _list(_SIMILARITY),
        "summary": _list(_SUMMARY),
        "settings": _SETTINGS,
    },
    {"skipped": _SKIPPED, "base": _opt(_obj({"path": _str})), "spectra_version": _str},
)


def _check_spectra(modules: list[dict[str, Any]]) -> None:
    """Computed values plus structural zeros cannot exceed min(out, in): the full spectrum of a
    module is allocated from these numbers."""
    for i, row in enumerate(modules):
        size = min(row["shape"])
        count = len(row["singular_values"]) + row.get("structural_zeros", 0)
        if count > size:
            raise _Invalid(
                f"modules[{i}]",
                f"{len(row['singular_values'])} singular values + "
                f"{row.get('structural_zeros', 0)} structural zeros exceed min(shape) = {size}",
            )
