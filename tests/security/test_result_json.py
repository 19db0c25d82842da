"""``figures --from-json`` and ``report --from-json`` with broken or crafted result files: one
message naming the file and the field, exit 1, nothing drawn or written."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from spectra.io.result_schema import MAX_SIDE
from tests.security.hostile import assert_refused


@pytest.fixture(scope="module")
def good_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.security.conftest import invoke
    from tests.security.hostile import make_ckpts

    ck = make_ckpts(tmp_path_factory.mktemp("result"))
    out = ck.root / "r.json"
    res = invoke("compare", ck.base, ck.full, ck.lora, ck.multilora, "-q", "--json", out)
    assert res.code == 0, res.err
    return json.loads(out.read_text())


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted path (list indices as numbers) to ``value``."""

    def edit(r: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = r
        for p in parents:
            node = node[p]
        node[last] = value

    return edit


def _drop(path: str) -> Callable[[dict], None]:
    def edit(r: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = r
        for p in parents:
            node = node[p]
        del node[last]

    return edit


def _first_multilora(r: dict) -> int:
    return next(i for i, m in enumerate(r["modules"]) if m["multilora"])


# name → (edit of a good result, needles)
EDITS: dict[str, tuple[Callable[[dict], None], tuple[str, ...]]] = {
    "modules-not-a-list": (_set("modules", 5), ("[modules]", "list")),
    "module-not-an-object": (_set("modules.0", "x"), ("[modules[0]]", "object")),
    "module-label-missing": (_drop("modules.0.label"), ("[modules[0].label]", "missing")),
    "singular-values-string": (_set("modules.0.singular_values", "abc"), ("singular_values",)),
    "singular-value-negative": (_set("modules.0.singular_values.0", -1.0), ("singular_values[0]",)),
    "singular-value-bool": (_set("modules.0.singular_values.0", True), ("singular_values[0]",)),
    "shape-one-entry": (_set("modules.0.shape", [8]), ("[modules[0].shape]", "2 entries")),
    "shape-huge": (_set("modules.0.shape", [MAX_SIDE * 4, 8]), ("[modules[0].shape[0]]",)),
    "structural-zeros-allocation": (
        _set("modules.0.structural_zeros", 10**12),
        ("[modules[0].structural_zeros]",),
    ),
    "more-values-than-min-shape": (
        _set("modules.0.structural_zeros", 100),
        ("[modules[0]]", "exceed min(shape)"),
    ),
    "layer-string": (_set("modules.0.layer", "x"), ("[modules[0].layer]", "integer")),
    "layer-huge-int": (_set("modules.0.layer", 10**30), ("[modules[0].layer]",)),
    "metrics-a-list": (_set("modules.0.metrics", [1]), ("[modules[0].metrics]", "object")),
    "base-metrics-string": (
        _set("modules.0.base_metrics.amplification", "x"),
        ("amplification", "number"),
    ),
    "inputs-label-missing": (_drop("inputs.0.label"), ("[inputs[0].label]", "missing")),
    "settings-null": (_set("settings", None), ("[settings]", "object")),
    "top-k-string": (_set("settings.top_k", "many"), ("[settings.top_k]", "integer")),
    "summary-label-number": (_set("summary.0.label", 1), ("[summary[0].label]", "string")),
    "skipped-not-object": (_set("skipped", {"x": 5}), ("[skipped.x]", "object")),
    "phi-ragged": (_set("similarity.0.phi", [[1, 2], [3]]), ("[similarity[0].phi]", "rectangular")),
    "phi-string": (_set("similarity.0.phi", "x"), ("[similarity[0].phi]",)),
    "side-unknown": (_set("similarity.0.side", "up"), ("[similarity[0].side]", "left")),
    "similarity-missing": (_drop("similarity"), ("[similarity]", "missing")),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_broken_result_fields_are_named(good_result, run_cli, tmp_path, case) -> None:
    edit, needles = EDITS[case]
    broken = copy.deepcopy(good_result)
    edit(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    for command in ("figures", "report"):
        res = run_cli(command, "--from-json", path, "-o", tmp_path / "out", inputs=(path,))
        assert_refused(res, str(path), "not a usable spectra result", *needles)
    assert not (tmp_path / "out").exists()


def test_multilora_block_without_phi(good_result, run_cli, tmp_path) -> None:
    broken = copy.deepcopy(good_result)
    i = _first_multilora(broken)
    del broken["modules"][i]["multilora"]["phi_left"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    res = run_cli("figures", "--from-json", path, "-o", tmp_path / "out")
    assert_refused(res, f"[modules[{i}].multilora.phi_left]", "missing")


TEXTS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "empty": (b"", ("not valid JSON",)),
    "truncated": (b'{"inputs": [{"label": "a"', ("not valid JSON",)),
    "not-utf8": (b"\xff\xfe{}", ("UTF-8",)),
    "top-level-list": (b"[]", ("must be an object",)),
    "nan-literal": (b'{"inputs": NaN}', ("NaN",)),
    "nested-too-deep": (b"[" * 100_000 + b"]" * 100_000, ("too deeply",)),
    "huge-integer": (b'{"a": ' + b"9" * 5000 + b"}", ("not usable JSON",)),
    "infinite-float": (b'{"x": 1e999}', ("[settings]", "inputs", "missing")),
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_unparsable_result_files_are_refused(run_cli, tmp_path, case) -> None:
    raw, needles = TEXTS[case]
    path = tmp_path / "r.json"
    path.write_bytes(raw)
    for command in ("figures", "report"):
        res = run_cli(command, "--from-json", path, "-o", tmp_path / "out", inputs=(path,))
        assert_refused(res, str(path), *needles)
    assert not (tmp_path / "out").exists()


def test_missing_and_directory_result_paths(run_cli, tmp_path) -> None:
    for path, needle in ((tmp_path / "nope.json", "no such file"), (tmp_path, "directory")):
        res = run_cli("report", "--from-json", path, "-o", tmp_path / "out")
        assert_refused(res, str(path), needle)


def test_a_saved_result_round_trips(good_result, tmp_path) -> None:
    """Control: the schema accepts what compare writes for every kind (full, LoRA, MultiLoRA,
    base metrics, similarity), else every case above would pass for the wrong reason. (That
    figures draw from such a file is checked by test_fuzz and the plots' own tests.)"""
    from spectra.results import load_result, save_result

    path = save_result(good_result, tmp_path / "good.json")
    assert load_result(path) == good_result
    assert {m["kind"] for m in good_result["modules"]} == {"full", "lora", "multilora"}


def test_a_pipe_or_device_is_never_read(run_cli, tmp_path) -> None:
    """Reading a FIFO with no writer blocks forever, /dev/zero never ends: both are refused
    before any read."""
    import os

    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        res = run_cli("report", "--from-json", path, "-o", tmp_path / "out")
        assert_refused(res, str(path), "not a regular file")
