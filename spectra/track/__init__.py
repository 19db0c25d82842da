"""Watching dominance while training: the adapter's spectra every N steps.

* :class:`Tracker` (``tracker.step(model, step)``): any training loop;
* :class:`SpectraCallback`: a ``transformers.Trainer`` callback logging through
  ``trainer.log`` (needs ``transformers``, the ``demo`` extra; imported on first use, so that
  plain loops do not import transformers);
* :class:`LiveAdapter`: the live adapter read as a checkpoint.

Reference: docs/track.md.
"""

from __future__ import annotations

from typing import Any

from spectra.track.live import LiveAdapter
from spectra.track.tracker import DEFAULT_EVERY, Tracker, TrackRecord

__all__ = ["DEFAULT_EVERY", "LiveAdapter", "SpectraCallback", "TrackRecord", "Tracker"]


def __getattr__(name: str) -> Any:
    if name == "SpectraCallback":
        # lazy: transformers is an optional dependency; plain loops do not import it
        from spectra.track.callback import SpectraCallback

        return SpectraCallback
    raise AttributeError(f"module 'spectra.track' has no attribute {name!r}")
