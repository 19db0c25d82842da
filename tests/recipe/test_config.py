"""RecipeConfig validates its fields and hashes what changes a run's result."""

from __future__ import annotations

import pytest

from spectra.errors import OptionError
from spectra.recipe.config import RecipeConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "must be > 0"),
        ("lr_full", -1e-5, "must be > 0"),
        ("num_threads", 0, ">= 1"),
        ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("warmup_frac", 1.0, r"\[0, 1\)"),
        ("methods", ("full", "full"), "at most once"),
        ("methods", ("full", "dora"), "unknown method"),
        ("multilora_n", 3, "divisible"),
        ("target_modules", (), "at least one"),
    ],
)
def test_invalid_settings_raise_option_error_naming_the_field(field, value, message) -> None:
    with pytest.raises(OptionError, match=message) as info:
        RecipeConfig(**{field: value})
    assert info.value.key == field


def test_settings_hash_ignores_speed_settings_only() -> None:
    base = RecipeConfig()
    assert base.settings_hash() == RecipeConfig(num_threads=2, device="cpu").settings_hash()
    assert base.settings_hash() != RecipeConfig(seed=1).settings_hash()
    assert base.settings_hash() != RecipeConfig(methods=("full",)).settings_hash()
    assert len(base.settings_hash()) == 16


def test_quick_is_smaller_and_accepts_overrides() -> None:
    quick, default = RecipeConfig.quick(seed=3), RecipeConfig()
    assert quick.seed == 3
    assert quick.steps < default.steps / 10
    assert quick.n_train_per_task < default.n_train_per_task
    assert quick.max_length <= default.max_length
    assert quick.to_json_dict()["methods"] == ["full", "lora", "multilora"]
