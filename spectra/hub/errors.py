"""The errors of Hub resolution: each a :class:`~spectra.errors.SpectraError` (exit code 1)
whose one-line message names the id and says what to do."""

from __future__ import annotations

from spectra.errors import SpectraError

INSTALL_HINT = "pip install 'spectra-ft[hub]'"


class HubError(SpectraError):
    """A checkpoint given as a Hugging Face Hub id could not be resolved to local files."""


class HubIdError(HubError):
    """The text is written as a Hub id (``hf://...``) but is not a valid one."""


class HubNotFoundError(HubError):
    """The repo, the revision, the path inside it, or any weights in it do not exist."""


class HubUnavailableError(HubError):
    """The Hub cannot be reached (offline mode, no network, server error) and the files needed
    are not in the local cache."""


class HubExtraMissingError(HubError):
    """``huggingface_hub`` (the ``hub`` extra) is not installed."""
