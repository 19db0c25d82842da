"""The result's one definition (spectra.result_types): the validator and docs/json.md are
derived from it, and a refusal reads as a sentence naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectra.errors import FileFormatError
from spectra.io.result_docs import field_rows, schema_markdown
from spectra.io.result_schema import check_result
from spectra.result_types import ModuleRow, Result
from spectra.results import load_result

DOCS = Path(__file__).parents[1] / "docs" / "json.md"
GOLDEN = Path(__file__).parent / "data" / "golden_result.json"


def test_docs_json_md_is_generated_from_the_types() -> None:
    assert DOCS.read_text(encoding="utf-8") == schema_markdown(), (
        "docs/json.md differs from spectra/result_types.py: run "
        "`python -m spectra.io.result_docs > docs/json.md`"
    )


def test_every_declared_field_has_a_row_and_a_meaning() -> None:
    paths = {row[0]: row for row in field_rows()}
    for name in ModuleRow.__annotations__:
        assert f"modules[].{name}" in paths
    assert paths["modules[].shape"][2] is True  # required
    assert paths["modules[].notes"][2] is False
    assert all(doc for _, _, _, doc in paths.values())


def _refusal(data: object, tmp_path: Path, **kw: bool) -> str:
    with pytest.raises(FileFormatError) as e:
        check_result(data, tmp_path / "r.json", **kw)
    return str(e.value)


def test_a_json_that_is_not_a_result_is_refused_in_a_sentence(tmp_path: Path) -> None:
    msg = _refusal({"x": 1}, tmp_path)
    assert msg.startswith(f"{tmp_path / 'r.json'} [settings]: not a usable spectra result: ")
    assert (
        "the required fields settings, inputs, modules, similarity and summary are missing" in msg
    )
    msg = _refusal([], tmp_path)
    assert "the file must be an object, got list" in msg


def test_field_errors_name_the_json_path(tmp_path: Path) -> None:
    good = json.loads(GOLDEN.read_text(encoding="utf-8"))
    good["modules"][2]["shape"] = [3]
    assert "modules[2].shape must have 2 entries, got 1" in _refusal(good, tmp_path)
    good = json.loads(GOLDEN.read_text(encoding="utf-8"))
    del good["modules"][0]["module_type"]
    assert "the required field modules[0].module_type is missing" in _refusal(good, tmp_path)
    good = json.loads(GOLDEN.read_text(encoding="utf-8"))
    good["similarity"][0]["phi"] = [[0.5, 0.2], [0.1]]
    assert "similarity[0].phi must be a non-empty rectangular grid" in _refusal(good, tmp_path)


def test_strict_refuses_undeclared_fields_lenient_reads_them(tmp_path: Path) -> None:
    good = json.loads(GOLDEN.read_text(encoding="utf-8"))
    good["modules"][0]["future_field"] = 1
    assert check_result(good, "r.json") is good
    assert "modules[0] has undeclared fields ['future_field']" in _refusal(
        good, tmp_path, strict=True
    )


def test_top_level_required_fields_follow_the_types() -> None:
    assert Result.__required_keys__ == {"settings", "inputs", "modules", "similarity", "summary"}


def test_an_old_wrapped_diagnose_file_is_read_as_its_result(tmp_path: Path) -> None:
    good = json.loads(GOLDEN.read_text(encoding="utf-8"))
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"diagnosis": {"overall": "ok"}, "result": good}))
    loaded = load_result(path)
    assert loaded["diagnosis"] == {"overall": "ok"} and loaded["modules"] == good["modules"]
