"""spectra.frames: the result as pandas DataFrames from the same rows as the report's CSV
files, and a result that a notebook displays as its summary table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "plots"))  # the shared result factory
from result_factory import analyzed_adapters, make_result  # noqa: E402

from spectra.frames import FramesExtraMissingError, frames  # noqa: E402
from spectra.results import AnalysisResult, dumps_result, load_result, save_result  # noqa: E402
from spectra.tables import METRIC_COLUMNS, write_tables  # noqa: E402

pd = pytest.importorskip("pandas")


def test_one_row_per_module_method_and_per_module_pair_side() -> None:
    result = make_result()
    f = frames(result)
    assert len(f.modules) == len(result["modules"]) == 3 * 6
    assert len(f.similarity) == len(result["similarity"]) == 6 * 3 * 2  # modules × pairs × sides
    assert list(f.summary["label"]) == ["full", "lora", "multilora"]
    assert set(METRIC_COLUMNS) <= set(f.modules.columns)
    assert {"stack", "layer", "module_type", "k90", "utilisation"} <= set(f.modules.columns)
    lora = f.modules[(f.modules["label"] == "lora") & (f.modules["layer"] == 1)]
    row = next(
        m for m in result["modules"] if m["label"] == "lora" and m["layer"] == 1
        and m["module_type"] == lora.iloc[0]["module_type"]
    )  # fmt: skip
    assert lora.iloc[0]["top1_energy"] == row["metrics"]["top1_energy"]
    sides = f.similarity.groupby(["module", "a", "b"])["side"].apply(sorted)
    assert all(s == ["left", "right"] for s in sides)


def test_the_report_csv_holds_the_same_rows(tmp_path: Path) -> None:
    result = make_result()
    f = frames(result)
    write_tables(result, tmp_path)
    for name in ("modules", "similarity", "summary"):
        df = getattr(f, name)
        written = pd.read_csv(tmp_path / f"{name}.csv")
        assert list(written.columns) == list(df.columns), name
        assert len(written) == len(df), name
        for col in df.columns:
            if pd.api.types.is_numeric_dtype(written[col]) and not isinstance(
                df[col].iloc[0], bool
            ):
                got = written[col].to_numpy(dtype=float)
                want = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
                np.testing.assert_array_equal(got, want, err_msg=f"{name}.{col}")


def test_a_result_displays_as_its_summary_table(tmp_path: Path) -> None:
    result = analyzed_adapters(tmp_path, {"lora_a": [3.0, 1.0], "lora_b": [2.0, 2.0]})
    assert isinstance(result, AnalysisResult)
    html = result._repr_html_()
    assert html.count("<table>") == 1 and "lora_a" in html and "mean_k90" in html
    md = result._repr_markdown_()
    assert md.startswith("spectra result: 1 modules of lora_a, lora_b")
    assert "| label | kind | modules |" in md and "| lora_b | lora | 1 |" in md
    # the same JSON as the plain dict; load_result gives the displayable object back
    assert dumps_result(result) == dumps_result(json.loads(dumps_result(result)))
    loaded = load_result(save_result(result, tmp_path / "r.json"))
    assert isinstance(loaded, AnalysisResult) and loaded == result
    assert len(loaded.frames().modules) == 2


def test_without_pandas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(FramesExtraMissingError, match=r"spectra-ft\[frames\]"):
        frames(make_result())
