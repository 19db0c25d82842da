"""The reference page of the result JSON (``docs/json.md``), generated from its types.

:func:`schema_markdown` walks :mod:`spectra.result_types` and writes one table row per field;
``tests/test_result_types.py`` fails when ``docs/json.md`` differs from it. Regenerate with
``python -m spectra.io.result_docs > docs/json.md``.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, NotRequired, Required, get_args, get_origin

from spectra.result_types import F, Result

_INTRO = """\
# JSON output (`compare --json`, `report/results.json`, `diagnose --json`)

One result shape for every command that writes one. `spectra figures --from-json` and
`spectra report --from-json` read any of them back (a file from `diagnose --json` carries one
more field, `diagnosis`). The same inputs give byte-identical JSON: no timestamps, keys in a
fixed order, NaN written as `null`.

This page is generated from the types in `spectra/result_types.py`
(`python -m spectra.io.result_docs > docs/json.md`); a test fails when they disagree.
Required fields must be present when a file is read back; the others may be absent (readers
fall back) but are written by the current version. Numbers are finite; unknown fields are
ignored. `[]` marks a list's items, `<label>` a map's keys.

Similarity rows cover every pair of inputs (a listed before b) for every module both have.

| field | type | required | meaning |
|---|---|---|---|
"""


def schema_markdown() -> str:
    """The whole ``docs/json.md`` text."""
    rows = [
        f"| `{path}` | {typ} | {'yes' if req else ''} | {doc.replace('|', chr(92) + '|')} |"
        for path, typ, req, doc in field_rows()
    ]
    return _INTRO + "\n".join(rows) + "\n"


def field_rows(tp: Any = Result, prefix: str = "") -> list[tuple[str, str, bool, str]]:
    """(JSON path, type, required, meaning) of every field, depth first, in writing order:
    the table of ``docs/json.md``."""
    rows: list[tuple[str, str, bool, str]] = []
    hints = typing.get_type_hints(tp, include_extras=True)
    for name, hint in hints.items():
        path = f"{prefix}.{name}" if prefix else name
        inner, field = _unwrap(hint)
        rows.append((path, _type_text(inner), name in tp.__required_keys__, field.doc))
        nested, suffix = _nested(inner)
        if nested is not None:
            rows += field_rows(nested, path + suffix)
    return rows


def _unwrap(hint: Any) -> tuple[Any, F]:
    while get_origin(hint) in (NotRequired, Required):
        hint = get_args(hint)[0]
    field = F("")
    if get_origin(hint) is Annotated:
        hint, *meta = get_args(hint)
        field = next((m for m in meta if isinstance(m, F)), field)
    return hint, field


def _nested(tp: Any) -> tuple[Any, str]:
    """The TypedDict inside ``tp`` (itself, a list's item, a map's value, or T of T | None)."""
    if typing.is_typeddict(tp):
        return tp, ""
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        inner, suffix = _nested(_unwrap(args[0])[0])
        return inner, "[]" + suffix
    if origin is dict:
        inner, suffix = _nested(_unwrap(args[1])[0])
        return inner, ".<label>" + suffix
    if origin in (types.UnionType, typing.Union):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _nested(members[0])
    return None, ""


def _type_text(tp: Any) -> str:
    tp = _unwrap(tp)[0]
    origin, args = get_origin(tp), get_args(tp)
    if typing.is_typeddict(tp):
        return "object"
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"map of {_type_text(args[1])}"
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin in (types.UnionType, typing.Union):
        return " \\| ".join(_type_text(a) for a in args)
    names = {str: "string", bool: "bool", int: "int", float: "number", type(None): "null"}
    return names.get(tp, "any")


if __name__ == "__main__":
    print(schema_markdown(), end="")
