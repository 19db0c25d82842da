"""The study's arms: valid recipe settings, ranks, names, and the order runs are trained in."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectra.errors import OptionError
from spectra.recipe import RecipeConfig
from spectra.study import StudySize
from spectra.study.arms import ABLATION_ARMS, ABLATION_PAIRS, ARMS, MAIN_ARMS
from spectra.study.runner import jobs_for

BASE = RecipeConfig()


def test_every_arm_is_a_valid_recipe_run_with_its_rank_and_title() -> None:
    expected = {
        "full": (None, "full fine-tuning"),
        "lora": (8, "LoRA r = 8"),
        "multilora": (8, "MultiLoRA 4 × 2"),
        "multilora_n1": (8, "MultiLoRA 1 × 8"),
        "multilora_n2": (8, "MultiLoRA 2 × 4"),
        "multilora_n8": (8, "MultiLoRA 8 × 1"),
        "multilora_init_lora": (8, "MultiLoRA 4 × 2 (B = 0 init)"),
        "multilora_scalar": (8, "MultiLoRA 4 × 2 (scalar scaling)"),
        "multilora_no_scaling": (8, "MultiLoRA 4 × 2 (B = 0 init, no scaling)"),
        "lora_r32": (32, "LoRA r = 32"),
        "multilora_4x8": (32, "MultiLoRA 4 × 8"),
    }
    assert {a.name: (a.rank(BASE), a.title(BASE)) for a in ARMS.values()} == expected
    for arm in ABLATION_ARMS:
        config = arm.config(BASE, seed=3)
        assert (config.seed, config.snapshots, config.methods) == (3, 0, (arm.method,))
        assert (config.steps, config.lr_adapter) == (BASE.steps, BASE.lr_adapter)  # equal steps
    main = MAIN_ARMS[0].config(BASE, seed=3)
    assert main.methods == ("full", "lora", "multilora") and main.snapshots == 0
    assert {a for pair in ABLATION_PAIRS for a in pair[:2]} <= set(ARMS)


def test_runs_are_ordered_most_useful_first() -> None:
    jobs = jobs_for(MAIN_ARMS + ABLATION_ARMS[:2], BASE, seeds=(0, 1, 2), ablation_seeds=(0, 1))
    order = [(j.run, j.seed) for j in jobs]
    assert order == [
        ("main", 0),
        ("main", 1),
        ("multilora_n1", 0),
        ("multilora_n2", 0),
        ("multilora_n1", 1),
        ("multilora_n2", 1),
        ("main", 2),
    ]
    folders = {j.folder(Path("study")) for j in jobs}
    assert len(folders) == len(jobs)  # one folder per run


def test_default_size_and_seed_checks() -> None:
    size = StudySize.default()
    assert (size.seeds, size.ablation_seeds, size.recipe.steps) == ((0, 1, 2, 3), (0, 1, 2), 480)
    with pytest.raises(OptionError, match="ablation seeds"):
        StudySize(BASE, (0,), (0, 1))
    with pytest.raises(OptionError, match="distinct"):
        StudySize(BASE, (0, 0), ())
    with pytest.raises(OptionError, match="unknown ablation arm"):
        StudySize(BASE, (0,), (0,), ("multilora_n3",))
