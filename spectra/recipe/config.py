"""Settings of the demo recipe: one frozen dataclass, validated on construction.

The recipe fine-tunes the real all-MiniLM-L6-v2 encoder on a three-task mix with three
methods (full fine-tuning, PEFT LoRA, MultiLoRA) from the same seed, data order and number of
steps, so that the three weight updates ΔW it writes can be compared fairly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from spectra.errors import OptionError

Method = Literal["full", "lora", "multilora"]
METHODS: tuple[Method, ...] = ("full", "lora", "multilora")

# Bump when a code change alters what a run produces, so that cached runs are not reused.
RECIPE_VERSION = "3"

# Fields that change where a run goes, not what it produces; left out of the settings hash.
# num_threads is hashed: torch's CPU kernels sum per-thread partial results (LayerNorm's weight
# and bias gradients, the backward of attention with dropout), so the thread count changes the
# last bits of the gradients at the first step, and those differences grow over training.
_UNHASHED = ("device",)


@dataclass(frozen=True)
class RecipeConfig:
    """What the recipe trains, on what data, for how long.

    The defaults train all three methods in about 10 minutes on one CPU core;
    :meth:`quick` is a plumbing-sized run (well under a minute) used by the test suite.
    """

    # -- reproducibility and hardware --------------------------------------------------------
    seed: int = 0  # seeds the data split, the batch order, head and adapter initialisation
    # torch.set_num_threads while training. Runs are bitwise reproducible only at the same
    # thread count (and CPU type, library versions); 1 is the reproducible default, and for
    # these small batches not slower than 2. None = every core this process may use.
    num_threads: int | None = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto": CUDA when available, else CPU

    # -- data ---------------------------------------------------------------------------------
    n_train_per_task: int = 1024  # cap on training examples per task (iris has only 105)
    n_test_per_task: int = 256  # cap on held-out examples per task (iris has only 45)
    sentiment_threshold: float = 1.0  # |mean human rating| below this is near-neutral: dropped
    max_length: int = 32  # tokens per text, [CLS]/[SEP] included; every task's text fits in 24

    # -- optimisation (identical for the three methods except the encoder learning rate) -------
    steps: int = 480  # optimizer steps per method
    batch_per_task: int = 8  # examples of each task in every batch (all tasks in each batch)
    lr_full: float = 5e-5  # encoder learning rate for full fine-tuning (usual BERT range)
    lr_adapter: float = 1e-3  # learning rate of LoRA / MultiLoRA parameters (usual LoRA range)
    lr_head: float = 2e-3  # learning rate of the per-task linear heads, every method
    warmup_frac: float = 0.1  # linear warm-up over this share of the steps, then linear decay
    max_grad_norm: float = 1.0  # gradient clipping on all trainable parameters
    probe_steps: int = 300  # full-batch steps of the "before" linear probe on frozen features
    eval_batch_size: int = 128  # texts per forward pass when evaluating

    # -- adapters -----------------------------------------------------------------------------
    # attention query/key/value, attention output dense ("attention.output.dense" ends with
    # "output.dense"), MLP up ("intermediate.dense") and down ("output.dense"); the pooler is
    # not part of the encoder (mean pooling does not use it). Matched as PEFT does: a module
    # whose name equals a pattern or ends with "." + pattern.
    target_modules: tuple[str, ...] = (
        "query",
        "key",
        "value",
        "output.dense",
        "intermediate.dense",
    )
    lora_r: int = 8  # LoRA rank r
    lora_alpha: float = 16.0  # LoRA α (scale α / r = 2); MultiLoRA gets the same α
    multilora_n: int = 4  # MultiLoRA parallel modules n
    # True: each MultiLoRA module has rank lora_r / n (2 at the defaults), so MultiLoRA trains the
    # same number of factor parameters as the LoRA it is compared with (plus n·out scalings).
    multilora_parameter_matched: bool = True
    # s_i learned per output channel ("vector"), one learned number per module ("scalar"), or
    # "none": fixed s_i = 1, not trained (needs multilora_init="lora", else ΔW ≠ 0 at step 0)
    multilora_scaling: Literal["vector", "scalar", "none"] = "vector"
    # "multilora": A_i, B_i Kaiming-uniform, s_i = 0 (the reference layer's initialisation);
    # "lora": A_i Kaiming-uniform, B_i = 0, s_i = 1 (LoRA's B = 0 rule; an ablation arm)
    multilora_init: Literal["multilora", "lora"] = "multilora"
    methods: tuple[Method, ...] = METHODS  # which methods to train, in this order
    # intermediate checkpoints per method, evenly spaced, the last at the final step, written as
    # checkpoints/<method>/checkpoint-<step>/ (an HF Trainer output folder); 0 = none
    snapshots: int = 8

    def __post_init__(self) -> None:
        _check_positive(self, ("n_train_per_task", "n_test_per_task", "max_length", "steps"))
        _check_positive(self, ("batch_per_task", "probe_steps", "eval_batch_size", "lora_r"))
        _check_positive(self, ("multilora_n", "lr_full", "lr_adapter", "lr_head"))
        _check_positive(self, ("lora_alpha", "max_grad_norm", "sentiment_threshold"))
        if self.num_threads is not None and self.num_threads < 1:
            raise OptionError(f"must be >= 1 or None, got {self.num_threads}", key="num_threads")
        if self.device not in ("auto", "cpu", "cuda"):
            raise OptionError(f"use 'auto', 'cpu' or 'cuda', got {self.device!r}", key="device")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise OptionError(f"must be in [0, 1), got {self.warmup_frac}", key="warmup_frac")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise OptionError(f"name each of {METHODS} at most once", key="methods")
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise OptionError(f"unknown method(s) {unknown}; use {METHODS}", key="methods")
        if self.multilora_parameter_matched and self.lora_r % self.multilora_n:
            raise OptionError(
                f"parameter-matched MultiLoRA needs lora_r ({self.lora_r}) divisible by "
                f"multilora_n ({self.multilora_n}); change one or set "
                "multilora_parameter_matched=False",
                key="multilora_n",
            )
        if not self.target_modules:
            raise OptionError("name at least one module pattern", key="target_modules")
        self._check_multilora_variant()
        if not 0 <= self.snapshots <= self.steps:
            raise OptionError(
                f"must be in [0, steps={self.steps}], got {self.snapshots}", key="snapshots"
            )

    def _check_multilora_variant(self) -> None:
        if self.multilora_scaling not in ("vector", "scalar", "none"):
            raise OptionError(
                f"use 'vector', 'scalar' or 'none', got {self.multilora_scaling!r}",
                key="multilora_scaling",
            )
        if self.multilora_init not in ("multilora", "lora"):
            raise OptionError(
                f"use 'multilora' or 'lora', got {self.multilora_init!r}", key="multilora_init"
            )
        if self.multilora_scaling == "none" and self.multilora_init != "lora":
            raise OptionError(
                "fixed scaling (s_i = 1) with MultiLoRA's initialisation (B_i ≠ 0) makes ΔW ≠ 0 "
                "at step 0; use multilora_init='lora' with multilora_scaling='none'",
                key="multilora_scaling",
            )

    @classmethod
    def quick(cls, **overrides: object) -> RecipeConfig:
        """A plumbing-sized run: same code path, a few dozen steps on a few hundred texts.

        Three trainings finish in well under a minute on two CPU cores; the accuracies it
        reports are not meaningful.
        """
        small: dict[str, object] = {
            "n_train_per_task": 96,
            "n_test_per_task": 48,
            "max_length": 24,
            "steps": 12,
            "batch_per_task": 4,
            "probe_steps": 50,
            "snapshots": 2,
        }
        return cls(**{**small, **overrides})  # type: ignore[arg-type]

    def snapshot_steps(self) -> tuple[int, ...]:
        """Steps after which each method's intermediate checkpoint is written.

        step_i = round(i · steps / snapshots), i = 1..snapshots (the last is ``steps``);
        duplicates (more snapshots than steps allow) collapse.
        """
        n = self.snapshots
        return tuple(sorted({round(i * self.steps / n) for i in range(1, n + 1)})) if n else ()

    def settings_hash(self) -> str:
        """SHA-256 (hex, 16 chars) of every setting that changes what a run produces.

        ``device`` is left out (a CUDA run is not bitwise a CPU run either; the log records
        the device). ``num_threads`` is in: it changes the floating-point result.
        """
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _UNHASHED}
        d["recipe_version"] = RECIPE_VERSION
        text = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_json_dict(self) -> dict[str, object]:
        """The settings as plain JSON values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


def _check_positive(config: RecipeConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise OptionError(f"must be > 0, got {value}", key=name)
