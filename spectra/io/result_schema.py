"""The check of a saved analysis result, derived from its one definition.

``spectra figures --from-json`` and ``spectra report --from-json`` draw from a file that may
have been edited, truncated or crafted. :func:`check_result` checks every field the plotters,
the report and ``diagnose`` read, before any of them runs, so a broken file is refused with one
sentence naming the file and the field (``modules[3].singular_values[0]``) instead of failing
somewhere inside matplotlib.

The rules are not written here: they are read from the types in :mod:`spectra.result_types`
(required and ``NotRequired`` fields, ``T | None``, ``Literal``, lists, maps, nested
TypedDicts, and the bounds in each field's :class:`~spectra.result_types.F`). Numbers must be
finite (NaN is written as null), and counts that size an allocation are bounded by the shapes
they describe. Unknown fields are allowed unless ``strict`` (the writer's own tests use
``strict`` so that every field written is declared).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required, get_args, get_origin

from spectra.errors import FileFormatError
from spectra.result_types import MAX_INT, MAX_SIDE, F, Result

Check = Callable[[Any, str], None]

__all__ = ["MAX_SIDE", "check_result"]

_FIX = "pass a file written by `spectra compare --json` (or `diagnose --json`), or write it again"


class _Invalid(Exception):
    """A field is not what the types say (internal; becomes FileFormatError)."""

    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}")
        self.where, self.what = where, what


def check_result(result: Any, path: str | Path, *, strict: bool = False) -> dict[str, Any]:
    """``result`` itself when it has the structure of an analysis result.

    Args:
        result: The parsed JSON of a result file.
        path: The file, named in the error.
        strict: Also refuse fields that :mod:`spectra.result_types` does not declare.

    Returns:
        ``result`` (unchanged).

    Raises:
        FileFormatError: A required field is missing, a field has the wrong type or an
            impossible value; the message is a sentence naming the field by its JSON path.
    """
    try:
        (_STRICT if strict else _LENIENT)(result, "")
        _check_spectra(result["modules"])
    except _Invalid as e:
        raise FileFormatError(
            f"not a usable spectra result: {e.what}; {_FIX}", path=path, key=e.where or None
        ) from e
    return result


# ---------------------------------------------------------------- building the checks
def _checker(tp: Any, field: F | None, strict: bool) -> Check:
    """The check of a value of type ``tp`` (with ``field``'s bounds)."""
    origin = get_origin(tp)
    if origin in (NotRequired, Required):
        return _checker(get_args(tp)[0], field, strict)
    if origin is Annotated:
        inner, *meta = get_args(tp)
        own = next((m for m in meta if isinstance(m, F)), field)
        return _checker(inner, own, strict)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in get_args(tp) if a is not type(None)]
        inner = _checker(members[0] if len(members) == 1 else tp, field, strict)
        return _opt(inner) if len(members) < len(get_args(tp)) else inner
    if origin is Literal:
        return _one_of(*get_args(tp))
    if origin is list:
        item = _checker(get_args(tp)[0], None, strict)
        check = _list(item, None if field is None else field.length)
        return _grid(check, field.grid) if field is not None and field.grid else check
    if origin is dict:
        return _dict_of(_checker(get_args(tp)[1], None, strict))
    if typing.is_typeddict(tp):
        return _typed_dict(tp, strict)
    lo = None if field is None else field.lo
    hi = None if field is None else field.hi
    simple: dict[Any, Check] = {
        str: _str,
        bool: _bool,
        int: _int(0 if lo is None else int(lo), MAX_INT if hi is None else int(hi)),
        # upper bounds of floats only when strict: files written before shares were clipped
        # to [0, 1] may hold 1.0000001, which every reader copes with
        float: _num(-math.inf if lo is None else lo, math.inf if hi is None or not strict else hi),
        Any: _any,
    }
    if tp in simple:
        return simple[tp]
    raise TypeError(f"result_types: no check for {tp!r}")  # a declaration error, not input


def _typed_dict(tp: Any, strict: bool) -> Check:
    hints = typing.get_type_hints(tp, include_extras=True)
    checks = {name: _checker(h, None, strict) for name, h in hints.items()}
    required = tp.__required_keys__

    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(where, f"{_name(where)} must be an object, got {_kind(v)}")
        missing = [_join(where, name) for name in checks if name in required and name not in v]
        if missing:
            fields = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
            noun = "field" if len(missing) == 1 else "fields"
            verb = "is" if len(missing) == 1 else "are"
            raise _Invalid(missing[0], f"the required {noun} {fields} {verb} missing")
        for name, field_check in checks.items():
            if name in v:
                field_check(v[name], _join(where, name))
        if strict:
            unknown = sorted(set(v) - set(checks))
            if unknown:
                raise _Invalid(where, f"{_name(where)} has undeclared fields {unknown}")

    return check


# ---------------------------------------------------------------- the leaf checks
def _str(v: Any, where: str) -> None:
    if not isinstance(v, str):
        raise _Invalid(where, f"{_name(where)} must be a string, got {_kind(v)}")


def _bool(v: Any, where: str) -> None:
    if not isinstance(v, bool):
        raise _Invalid(where, f"{_name(where)} must be true or false, got {_kind(v)}")


def _any(v: Any, where: str) -> None:
    """Anything JSON (only shown as text)."""


def _int(minimum: int, maximum: int) -> Check:
    def check(v: Any, where: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(where, f"{_name(where)} must be an integer, got {_kind(v)}")
        if not minimum <= v <= maximum:
            raise _Invalid(
                where, f"{_name(where)} must be between {minimum} and {maximum}, got {v}"
            )

    return check


def _num(minimum: float, maximum: float = math.inf) -> Check:
    def check(v: Any, where: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Invalid(where, f"{_name(where)} must be a number, got {_kind(v)}")
        # an int beyond 2^53 is not exact as a float (and beyond ~1e308 not a float at all)
        finite = abs(v) <= MAX_INT if isinstance(v, int) else math.isfinite(v)
        if not finite or v < minimum:
            raise _Invalid(
                where, f"{_name(where)} must be a finite number >= {minimum:g}, got {_kind(v)}"
            )
        if v > maximum:
            raise _Invalid(where, f"{_name(where)} must be at most {maximum:g}, got {v!r}")

    return check


def _one_of(*allowed: str) -> Check:
    def check(v: Any, where: str) -> None:
        if v not in allowed:
            raise _Invalid(
                where, f"{_name(where)} must be one of {', '.join(allowed)}, got {_kind(v)}"
            )

    return check


def _opt(inner: Check) -> Check:
    """``inner`` or null."""

    def check(v: Any, where: str) -> None:
        if v is not None:
            inner(v, where)

    return check


def _list(item: Check, length: int | None) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, list):
            raise _Invalid(where, f"{_name(where)} must be a list, got {_kind(v)}")
        if length is not None and len(v) != length:
            raise _Invalid(where, f"{_name(where)} must have {length} entries, got {len(v)}")
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")

    return check


def _grid(rows: Check, shape: Literal["rect", "square"]) -> Check:
    """A non-empty rectangular (or square) list of lists."""

    def check(v: Any, where: str) -> None:
        rows(v, where)
        if not v or not v[0] or any(len(row) != len(v[0]) for row in v):
            raise _Invalid(
                where, f"{_name(where)} must be a non-empty rectangular grid (rows of equal length)"
            )
        if shape == "square" and len(v) != len(v[0]):
            raise _Invalid(where, f"{_name(where)} must be square, got {len(v)} x {len(v[0])}")

    return check


def _dict_of(value: Check) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(where, f"{_name(where)} must be an object, got {_kind(v)}")
        for k, x in v.items():
            value(x, _join(where, k))

    return check


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _name(where: str) -> str:
    return where or "the file"


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_LENIENT = _typed_dict(Result, strict=False)
_STRICT = _typed_dict(Result, strict=True)


def _check_spectra(modules: list[dict[str, Any]]) -> None:
    """Computed values plus structural zeros cannot exceed min(out, in): the full spectrum of a
    module is allocated from these numbers."""
    for i, row in enumerate(modules):
        size = min(row["shape"])
        count = len(row["singular_values"]) + row.get("structural_zeros", 0)
        if count > size:
            raise _Invalid(
                f"modules[{i}]",
                f"modules[{i}] has {len(row['singular_values'])} singular values + "
                f"{row.get('structural_zeros', 0)} structural zeros, which exceed "
                f"min(shape) = {size}",
            )
