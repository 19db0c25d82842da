"""A real ``transformers.Trainer`` run of a few steps on a tiny BERT (tests/models.py), with a
PEFT LoRA or a spectra MultiLoRA adapter: shared by the tracking and trajectory tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import TrainerCallback

from spectra.multilora import (
    MultiLoRAConfig,
    inject_multilora,
    mark_only_multilora_trainable,
    save_multilora,
)
from tests.models import tiny_bert_config

TARGETS = ["query", "value"]


class Tokens(Dataset):
    """Random token sequences with binary labels (seeded, fixed)."""

    def __init__(self, n: int = 64, length: int = 8, vocab: int = 50) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def tiny_classifier() -> nn.Module:
    """A freshly initialised tiny ``BertForSequenceClassification`` (seed 0)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config())


def peft_model(*, r: int = 4, use_rslora: bool = False, **extra: Any) -> nn.Module:
    """The tiny classifier with a PEFT LoRA on query/value (no modules_to_save: the saved
    adapter holds only LoRA factors). B is given random values so that step 0 is not ΔW = 0."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.1, use_rslora=use_rslora,
        **extra,
    )  # fmt: skip
    model = get_peft_model(tiny_classifier(), config)
    return model


def multilora_model() -> tuple[nn.Module, Any]:
    """The tiny classifier with spectra's MultiLoRA (n = 2, r = 2) on query/value, only the
    adapter trainable. Returns (model, MultiLoRAConfig)."""
    model = tiny_classifier()
    config = MultiLoRAConfig(r=2, n=2, lora_alpha=4, target_modules=tuple(TARGETS))
    torch.manual_seed(0)
    inject_multilora(model, config)
    mark_only_multilora_trainable(model)
    return model, config


def train(
    model: nn.Module,
    out: Path,
    *,
    steps: int = 6,
    save_steps: int | None = None,
    callbacks: list[Any] | None = None,
    make_callbacks: Any = None,
    lr: float = 5e-2,
) -> Any:
    """Train ``model`` for ``steps`` optimizer steps with a real Trainer; returns the trainer.

    ``make_callbacks(trainer)`` returns callbacks that need the trainer (added after it is
    built). ``save_steps``: write ``checkpoint-N/`` every that many steps (None: no saving)."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=lr,
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=callbacks)
    for cb in make_callbacks(trainer) if make_callbacks else []:
        trainer.add_callback(cb)
    trainer.train()
    return trainer


class SaveMultiLoRA(TrainerCallback):
    """Writes ``out/checkpoint-<step>/multilora.safetensors`` with spectra's MultiLoRA writer
    every ``every`` steps (after the optimizer step, as the Trainer saves its checkpoints)."""

    def __init__(self, every: int, out: Path, config: MultiLoRAConfig) -> None:
        self.every, self.out, self.config = every, out, config

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step % self.every == 0:
            path = self.out / f"checkpoint-{state.global_step}" / "multilora.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_multilora(model, path, self.config)
        return control


class Recorder(TrainerCallback):
    """Stands in for a reporting integration (TensorBoard, W&B, MLflow): records what
    ``on_log`` receives, as (global step, logs)."""

    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, float]]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        self.logs.append((state.global_step, dict(logs or {})))
