"""What the study trains: the demo's three methods, and the MultiLoRA ablation arms.

Every arm is the demo recipe (:class:`spectra.recipe.RecipeConfig`) with a few settings
changed, trained per seed from the same data split, batch order and heads as the main run of
that seed, for the same number of steps. The main run trains full fine-tuning, LoRA r = 8 and
MultiLoRA 4 × 2 together (the demo); each ablation arm is a run of one adapter.

At equal adapter parameter count (total rank 8, parameter-matched; MultiLoRA adds n·out
scalings) the ablation varies one ingredient of MultiLoRA at a time:

========================  ===================================================================
arm                       what changes against MultiLoRA 4 × 2 (vector scaling, Kaiming A, B)
========================  ===================================================================
``multilora_n1``          n = 1 (one module of rank 8): MultiLoRA's init and scaling alone
``multilora_n2``          n = 2 (2 × 4)
``multilora_n8``          n = 8 (8 × 1)
``multilora_init_lora``   LoRA's initialisation: B_i = 0, s_i = 1 (still learned)
``multilora_scalar``      one learned scalar s_i per module instead of a vector
``multilora_no_scaling``  no scaling: s_i = 1 fixed (needs B_i = 0, so LoRA's init)
``lora_r32``              LoRA at rank n·r = 32 ...
``multilora_4x8``         ... against MultiLoRA 4 × 8 (not parameter-matched): equal size
========================  ===================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from spectra.recipe.config import Method, RecipeConfig

MAIN_RUN = "main"  # the run that trains full fine-tuning, LoRA and MultiLoRA together


@dataclass(frozen=True)
class Arm:
    """One trained update the study compares.

    Attributes:
        name: Its label in every table (``full``, ``lora``, ``multilora`` for the main run).
        method: Which recipe method trains it.
        group: ``main``, or the ablation it belongs to: ``n``, ``init``, ``scaling``, ``rank``.
        overrides: RecipeConfig fields changed against the study's base settings.
        run: ``main`` for the three methods of the main run, else the arm's own run.
    """

    name: str
    method: Method
    group: str
    overrides: tuple[tuple[str, object], ...] = ()
    run: str = ""

    @property
    def run_name(self) -> str:
        """The run that trains this arm: ``main`` or the arm's name."""
        return self.run or self.name

    def config(self, base: RecipeConfig, seed: int) -> RecipeConfig:
        """The recipe settings of this arm's run for ``seed`` (no intermediate checkpoints)."""
        if self.run_name == MAIN_RUN:
            return dataclasses.replace(base, seed=seed, snapshots=0)
        return dataclasses.replace(
            base, seed=seed, snapshots=0, methods=(self.method,), **dict(self.overrides)
        )

    def rank(self, base: RecipeConfig) -> int | None:
        """Total adapter rank (the k of φ(k, k) against full fine-tuning); None for full."""
        c = self.config(base, 0)
        if self.method == "full":
            return None
        if self.method == "lora":
            return c.lora_r
        per_module = c.lora_r // c.multilora_n if c.multilora_parameter_matched else c.lora_r
        return c.multilora_n * per_module

    def title(self, base: RecipeConfig) -> str:
        """Human name, e.g. ``MultiLoRA 4 × 2 (LoRA init)``."""
        c = self.config(base, 0)
        if self.method == "full":
            return "full fine-tuning"
        if self.method == "lora":
            return f"LoRA r = {c.lora_r}"
        r_m = c.lora_r // c.multilora_n if c.multilora_parameter_matched else c.lora_r
        notes = []
        if c.multilora_init == "lora":
            notes.append("B = 0 init")
        if c.multilora_scaling == "none":
            notes.append("no scaling")
        elif c.multilora_scaling != "vector":
            notes.append(f"{c.multilora_scaling} scaling")
        return f"MultiLoRA {c.multilora_n} × {r_m}" + (f" ({', '.join(notes)})" if notes else "")


MAIN_ARMS: tuple[Arm, ...] = (
    Arm("full", "full", "main", run=MAIN_RUN),
    Arm("lora", "lora", "main", run=MAIN_RUN),
    Arm("multilora", "multilora", "main", run=MAIN_RUN),
)

ABLATION_ARMS: tuple[Arm, ...] = (
    Arm("multilora_n1", "multilora", "n", (("multilora_n", 1),)),
    Arm("multilora_n2", "multilora", "n", (("multilora_n", 2),)),
    Arm("multilora_n8", "multilora", "n", (("multilora_n", 8),)),
    Arm("multilora_init_lora", "multilora", "init", (("multilora_init", "lora"),)),
    Arm("multilora_scalar", "multilora", "scaling", (("multilora_scaling", "scalar"),)),
    Arm(
        "multilora_no_scaling",
        "multilora",
        "scaling",
        (("multilora_scaling", "none"), ("multilora_init", "lora")),
    ),
    Arm("lora_r32", "lora", "rank", (("lora_r", 32),)),
    Arm("multilora_4x8", "multilora", "rank", (("multilora_parameter_matched", False),)),
)

ARMS: dict[str, Arm] = {a.name: a for a in MAIN_ARMS + ABLATION_ARMS}

# The ablation's paired comparisons: (arm A, arm B, what A − B isolates).
ABLATION_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("multilora_n1", "lora", "n = 1: MultiLoRA's init and scaling vs plain LoRA, rank 8"),
    ("multilora_n2", "multilora_n1", "n = 2 vs n = 1"),
    ("multilora", "multilora_n2", "n = 4 vs n = 2"),
    ("multilora_n8", "multilora", "n = 8 vs n = 4"),
    ("multilora", "multilora_init_lora", "init: Kaiming B, s = 0 vs B = 0, s = 1 (n = 4)"),
    ("multilora", "multilora_scalar", "scaling: learned vector vs learned scalar (n = 4)"),
    ("multilora_init_lora", "multilora_no_scaling", "scaling: learned vector vs none (B = 0 init)"),
    ("multilora_4x8", "lora_r32", "rank 32: MultiLoRA 4 × 8 vs LoRA r = 32"),
)
