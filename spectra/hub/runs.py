"""A training run pushed to the Hub: its ``checkpoint-<step>/`` folders, in step order.

``transformers.Trainer`` with ``push_to_hub=True`` and ``hub_strategy="all_checkpoints"``
pushes every checkpoint as a ``checkpoint-<step>/`` folder of the repo; ``spectra trajectory
org/run`` reads them as it reads a local ``output_dir``.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from spectra.hub.client import open_snapshot
from spectra.hub.errors import HubError
from spectra.hub.ids import has_scheme, parse_hub_id

_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")


def run_checkpoint_ids(arg: str | os.PathLike[str]) -> list[str] | None:
    """The Hub ids of the ``checkpoint-<step>/`` folders directly inside the repo folder
    ``arg`` names, by step, each pinned to the commit the revision resolved to.

    Returns:
        The ids (``hf://org/name@<commit>/[path/]checkpoint-<step>``), or None when ``arg`` is
        a local path, not a Hub id, or a repo folder without such folders, or an id without
        ``hf://`` that does not resolve (then :func:`spectra.hub.resolve` says why, naming
        both readings).

    Raises:
        HubError: An ``hf://`` id that names no readable repo or revision.
    """
    text = os.fspath(arg)
    if not has_scheme(text) and Path(text).exists():
        return None
    hub_id = parse_hub_id(text)
    if hub_id is None:
        return None
    try:
        snapshot = open_snapshot(hub_id)
    except HubError:
        if hub_id.explicit:
            raise
        return None
    prefix = f"{hub_id.path.strip('/')}/" if hub_id.path else ""
    steps: dict[int, str] = {}
    for name in snapshot.files:
        parts = name.removeprefix(prefix).split("/") if name.startswith(prefix) else []
        if len(parts) > 1 and (m := _CHECKPOINT_DIR.fullmatch(parts[0])):
            steps[int(m.group(1))] = parts[0]
    if not steps:
        return None
    pinned = replace(hub_id, revision=snapshot.commit, explicit=True)
    return [str(replace(pinned, path=prefix + steps[s])) for s in sorted(steps)]
