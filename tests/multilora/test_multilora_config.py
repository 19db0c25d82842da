"""MultiLoRAConfig: validation, per-module rank and scale, PEFT-style target matching."""

from __future__ import annotations

import pytest

from spectra.multilora import MultiLoRAConfig


def test_defaults_rank_and_scale() -> None:
    c = MultiLoRAConfig()
    assert (c.r, c.n, c.lora_alpha, c.scaling) == (8, 4, 16.0, "vector")
    assert c.module_rank == 8
    assert c.scale == 2.0


def test_parameter_matched_splits_rank_and_scale_uses_module_rank() -> None:
    c = MultiLoRAConfig(r=8, n=4, lora_alpha=16, parameter_matched=True)
    assert c.module_rank == 2
    assert c.scale == 8.0


def test_parameter_matched_refuses_indivisible_rank() -> None:
    with pytest.raises(ValueError, match=r"multiple of n \(e\.g\. r=8\)"):
        MultiLoRAConfig(r=6, n=4, parameter_matched=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"r": 0},
        {"n": 0},
        {"n": -2},
        {"lora_alpha": 0.0},
        {"lora_dropout": 1.0},
        {"lora_dropout": -0.1},
        {"scaling": "matrix"},
        {"target_modules": "query"},
        {"target_modules": ("re:(unclosed",)},
    ],
)
def test_invalid_settings_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MultiLoRAConfig(**kwargs)


def test_target_modules_list_becomes_tuple() -> None:
    c = MultiLoRAConfig(target_modules=["query", "value"])  # type: ignore[arg-type]
    assert c.target_modules == ("query", "value")
    assert hash(c) == hash(MultiLoRAConfig(target_modules=("query", "value")))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("query", True),
        ("encoder.layer.0.attention.self.query", True),
        ("encoder.layer.0.attention.self.myquery", False),
        ("encoder.layer.0.query.dense", False),
        ("encoder.layer.0.attention.self.value", False),
    ],
)
def test_plain_name_matches_as_peft(path: str, expected: bool) -> None:
    assert MultiLoRAConfig(target_modules=("query",)).matches(path) is expected


def test_dotted_name_matches_suffix_on_dot_boundary() -> None:
    c = MultiLoRAConfig(target_modules=("self.query",))
    assert c.matches("layer.0.attention.self.query")
    assert not c.matches("layer.0.attention.myself.query")


def test_regex_must_match_whole_path() -> None:
    c = MultiLoRAConfig(target_modules=(r"re:.*layer\.1\..*(query|value)",))
    assert c.matches("encoder.layer.1.attention.self.value")
    assert not c.matches("encoder.layer.0.attention.self.value")
    assert not c.matches("encoder.layer.1.attention.self.value.extra")  # fullmatch, not search
    assert not MultiLoRAConfig(target_modules=("re:query",)).matches("a.query")


def test_empty_targets_match_nothing() -> None:
    assert not MultiLoRAConfig().matches("query")
