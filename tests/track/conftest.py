"""Real Trainer runs shared by the tracking and trajectory tests (one of each per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.track.training import (
    Recorder,
    SaveMultiLoRA,
    multilora_model,
    peft_model,
    train,
)

STEPS = 6
EVERY = 2


@dataclass
class Run:
    """A finished run: its trainer, the SpectraCallback, a recorder standing in for a
    reporting integration, the output folder and the JSONL file."""

    trainer: Any
    callback: Any
    recorder: Any
    out: Path
    jsonl: Path
    model: Any
    config: Any = None


def _run(model: Any, out: Path, *, config: Any = None, save: Any = None) -> Run:
    from spectra.track import SpectraCallback

    jsonl = out / "spectra.jsonl"
    made: dict[str, Any] = {}

    def make(trainer: Any) -> list[Any]:
        made["callback"] = SpectraCallback(trainer, every=EVERY, jsonl=jsonl)
        return [made["callback"]]

    recorder = Recorder()
    callbacks = [recorder] + ([save] if save is not None else [])
    trainer = train(
        model, out, steps=STEPS, save_steps=None if save else EVERY, callbacks=callbacks,
        make_callbacks=make,
    )  # fmt: skip
    return Run(trainer, made["callback"], recorder, out, jsonl, model, config)


@pytest.fixture(scope="session")
def peft_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """PEFT LoRA (r = 4) on query/value, 6 steps, tracked and saved every 2 steps."""
    return _run(peft_model(), tmp_path_factory.mktemp("peft-run"))


@pytest.fixture(scope="session")
def multilora_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """MultiLoRA (n = 2, r = 2) on query/value, 6 steps, tracked every 2 steps and written with
    spectra's MultiLoRA writer at the same steps (checkpoint-<step>/multilora.safetensors)."""
    out = tmp_path_factory.mktemp("multilora-run")
    model, config = multilora_model()
    return _run(model, out, config=config, save=SaveMultiLoRA(EVERY, out, config))
