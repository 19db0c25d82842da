"""The default rule for intruder dimensions: computed when cheap, skipped with one line."""

from __future__ import annotations

import pytest

from spectra.engine.intruder_policy import (
    INTRUDER_AUTO_SECONDS,
    INTRUDER_SECONDS_PER_UNIT,
    intruder_work,
    plan_intruders,
)


def test_work_is_big_side_times_small_side_squared():
    assert intruder_work((4096, 11008)) == 11008 * 4096**2
    assert intruder_work((64, 32)) == 64 * 32**2


def test_auto_runs_on_small_models_and_skips_model_scale():
    small = plan_intruders("auto", [(768, 768)] * 4)
    assert small.run and small.skipped_line() is None
    big = plan_intruders("auto", [(4096, 4096)] * 8)
    assert not big.run and big.pairs == 8
    assert big.estimated_seconds == pytest.approx(8 * 4096**3 * INTRUDER_SECONDS_PER_UNIT)
    line = big.skipped_line()
    assert line is not None and "\n" not in line
    assert "8 (module, checkpoint) pairs" in line and "--intruders" in line and "estimated" in line


def test_the_limit_is_inclusive():
    n = round((INTRUDER_AUTO_SECONDS / INTRUDER_SECONDS_PER_UNIT) ** (1 / 3))
    just_below = plan_intruders("auto", [(n - 1, n - 1)])
    assert just_below.estimated_seconds <= INTRUDER_AUTO_SECONDS and just_below.run


def test_always_never_and_nothing_to_do():
    assert plan_intruders("always", [(4096, 4096)] * 8).run
    never = plan_intruders("never", [(8, 8)])
    assert not never.run and never.skipped_line() is None  # asked: nothing to say
    empty = plan_intruders("auto", [])
    assert not empty.run and empty.skipped_line() is None
    with pytest.raises(ValueError, match="auto, always, never"):
        plan_intruders("sometimes", [])  # type: ignore[arg-type]
