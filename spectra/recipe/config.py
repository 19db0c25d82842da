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
RECIPE_VERSION = "2"

# Fields that change how fast a run goes, not what it produces; left out of the settings hash.
_UNHASHED = ("num_threads", "device")


@dataclass(frozen=True)
class RecipeConfig:
    """What the recipe trains, on what data, for how long.

    The defaults train all three methods in about 6–7 minutes on two CPU cores;
    :meth:`quick` is a plumbing-sized run (well under a minute) used by the test suite.
    """

    # -- reproducibility and hardware --------------------------------------------------------
    seed: int = 0  # seeds the data split, the batch order, head and adapter initialisation
    num_threads: int | None = None  # torch.set_num_threads; None = every core this process may use
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
    multilora_scaling: Literal["vector", "scalar"] = "vector"  # s_i per output channel or scalar
    methods: tuple[Method, ...] = METHODS  # which methods to train, in this order

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
        }
        return cls(**{**small, **overrides})  # type: ignore[arg-type]

    def settings_hash(self) -> str:
        """SHA-256 (hex, 16 chars) of every setting that changes what a run produces.

        ``num_threads`` and ``device`` are left out: they change speed (and float rounding),
        not the experiment.
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
