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
        ("multilora_scaling", "none", "multilora_init='lora'"),
        ("multilora_scaling", "matrix", "'vector', 'scalar' or 'none'"),
        ("multilora_init", "zeros", "'multilora' or 'lora'"),
        ("snapshots", 481, r"\[0, steps=480\]"),
    ],
)
def test_invalid_settings_raise_option_error_naming_the_field(field, value, message) -> None:
    with pytest.raises(OptionError, match=message) as info:
        RecipeConfig(**{field: value})
    assert info.value.key == field


def test_settings_hash_ignores_the_device_but_not_the_thread_count() -> None:
    # the thread count changes the floating-point result of training (per-thread partial sums)
    base = RecipeConfig()
    assert base.num_threads == 1
    assert base.settings_hash() == RecipeConfig(device="cpu").settings_hash()
    assert base.settings_hash() != RecipeConfig(num_threads=2).settings_hash()
    assert base.settings_hash() != RecipeConfig(seed=1).settings_hash()
    assert base.settings_hash() != RecipeConfig(multilora_init="lora").settings_hash()
    assert base.settings_hash() != RecipeConfig(methods=("full",)).settings_hash()
    assert len(base.settings_hash()) == 16


def test_quick_is_smaller_and_accepts_overrides() -> None:
    quick, default = RecipeConfig.quick(seed=3), RecipeConfig()
    assert quick.seed == 3
    assert quick.steps < default.steps / 10
    assert quick.n_train_per_task < default.n_train_per_task
    assert quick.max_length <= default.max_length
    assert quick.to_json_dict()["methods"] == ["full", "lora", "multilora"]


@pytest.mark.parametrize(
    ("steps", "snapshots", "expected"),
    [(480, 8, (60, 120, 180, 240, 300, 360, 420, 480)), (12, 2, (6, 12)), (10, 3, (3, 7, 10)),
     (3, 3, (1, 2, 3)), (480, 0, ())],
)  # fmt: skip
def test_snapshot_steps_are_evenly_spaced_and_end_at_the_last_step(
    steps, snapshots, expected
) -> None:
    # step_i = round(i · steps / snapshots); round() of 3.33, 6.67 is 3, 7
    assert RecipeConfig(steps=steps, snapshots=snapshots).snapshot_steps() == expected
