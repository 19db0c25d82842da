"""``SpectraCallback``: :class:`~spectra.track.tracker.Tracker` inside a ``transformers.Trainer``.

Every ``every`` optimizer steps (``on_step_end``, after the update, so the weights measured are
those a checkpoint saved at that step holds) the callback measures the live adapter and hands
the per-module-type summary to ``trainer.log``: it lands in ``trainer.state.log_history`` and
reaches every reporting callback the trainer has (TensorBoard, W&B, MLflow, ... per
``report_to``) at that step. The per-module values go to the JSONL file (main process only).

``trainer.log`` is a method of the trainer, which callbacks are not handed; so the callback is
given the trainer::

    trainer = Trainer(model=peft_model, args=args, train_dataset=data)
    trainer.add_callback(SpectraCallback(trainer, every=50, jsonl="out/spectra.jsonl"))
    trainer.train()
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from spectra.errors import OptionError
from spectra.track.live import LiveAdapter
from spectra.track.tracker import Tracker, TrackRecord

logger = logging.getLogger("spectra.track")


class SpectraCallback(TrainerCallback):
    """Log the adapter's dominance metrics through the trainer every ``every`` steps.

    Args:
        trainer: The ``transformers.Trainer`` whose ``log`` receives the metrics.
        **options: The settings of :class:`~spectra.track.tracker.Tracker`, by keyword:
            ``every`` (default 50), ``jsonl``, ``stop_on``, ``thresholds``, ``adapter``,
            ``modules``, ``exclude``, ``dtype``, ``device``, ``prefix``. With ``stop_on``
            reached the callback sets ``control.should_training_stop`` and logs
            :attr:`stop_message` (a warning).

    Attributes:
        tracker: The tracker doing the work (``tracker.last`` is the latest record).

    Raises:
        OptionError: ``trainer`` has no ``log`` method, or an invalid setting.
        AdapterConfigError: The trainer's model holds no adapter spectra reads (checked
            here, before any training step).
        TypeError: A keyword that is not one of :class:`~spectra.track.tracker.Tracker`'s.
    """

    def __init__(self, trainer: Any, **options: Any) -> None:
        if not callable(getattr(trainer, "log", None)):
            raise OptionError(
                "SpectraCallback needs the Trainer as its first argument (its metrics go "
                "through trainer.log): trainer.add_callback(SpectraCallback(trainer, ...))"
            )
        self.trainer = trainer
        self.tracker = Tracker(**options)
        if getattr(trainer, "model", None) is not None:
            LiveAdapter(trainer.model, adapter=self.tracker.adapter).modules()

    @property
    def stop_message(self) -> str | None:
        """Why training was stopped, or None."""
        return self.tracker.stop_message

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> TrainerControl:
        """Measure when the global step is due; log; stop on ``stop_on``."""
        if model is None or not self.tracker.due(state.global_step):
            return control
        record = self.tracker.measure(model, state.global_step, write=state.is_world_process_zero)
        self.trainer.log(dict(log_values(record)))
        if self.tracker.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            logger.warning(self.tracker.stop_message)
        return control


def log_values(record: TrackRecord) -> dict[str, float]:
    """The scalars handed to ``trainer.log``: the summary (per module type and over all)."""
    return dict(record.summary)
