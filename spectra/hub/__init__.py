"""Checkpoints on the Hugging Face Hub, wherever spectra takes a checkpoint or a base.

Any checkpoint argument, and the base, may be a Hub id instead of a local path::

    spectra inspect org/adapter
    spectra compare --base org/base org/adapter@v2 hf://org/runs/checkpoint-500
    spectra diagnose org/adapter            # the base named in adapter_config.json

Syntax (:mod:`spectra.hub.ids`): ``hf://ORG/NAME[@REVISION][/PATH/IN/REPO]``, or the same
without ``hf://`` when no local path of that name exists (a local path always wins).
Resolution goes through ``huggingface_hub`` (the ``hub`` extra), cache first, honouring
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` and ``HF_ENDPOINT``
(:mod:`spectra.hub.client`); only the files the analysis reads are downloaded: an adapter's
config and weights, a base's index and the shards holding the adapted matrices
(:mod:`spectra.hub.select`). Reference: docs/hub.md.
"""

from spectra.hub.errors import (
    HubError,
    HubExtraMissingError,
    HubIdError,
    HubNotFoundError,
    HubUnavailableError,
)
from spectra.hub.ids import HubId, parse_hub_id
from spectra.hub.inputs import (
    ResolvedInputs,
    base_for,
    labels_for,
    named_base,
    needed_tensors,
    resolve_inputs,
)
from spectra.hub.resolve import HubSource, Resolved, locate, record_sources, resolve, resolved_from
from spectra.hub.runs import run_checkpoint_ids

__all__ = [
    "HubError",
    "HubExtraMissingError",
    "HubId",
    "HubIdError",
    "HubNotFoundError",
    "HubSource",
    "HubUnavailableError",
    "Resolved",
    "ResolvedInputs",
    "base_for",
    "labels_for",
    "locate",
    "named_base",
    "needed_tensors",
    "parse_hub_id",
    "record_sources",
    "resolve",
    "resolve_inputs",
    "resolved_from",
    "run_checkpoint_ids",
]
