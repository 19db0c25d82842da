"""Hugging Face Hub ids as spectra reads them on the command line and in adapter configs.

Syntax (the ``hf://`` form is that of ``huggingface_hub.HfFileSystem``)::

    hf://ORG/NAME[@REVISION][/PATH/IN/REPO]     always a Hub id, never a local path
    ORG/NAME[@REVISION][/PATH/IN/REPO]          a Hub id when no local file or directory
                                                of that name exists
    hf://NAME[@REVISION]                        a repo without namespace (``gpt2``)

``REVISION`` is a branch, a tag or a commit hash; ``refs/pr/N`` and ``refs/convert/X`` are
read whole, any other ``/`` inside a revision is written ``%2F``. ``PATH/IN/REPO`` is a folder
of the repo (an adapter saved in a subfolder) or one file of it
(``hf://org/name/loras/run3.safetensors``).

Parsing is text only: no network, no ``huggingface_hub`` import, so that a missing extra can
still be named in the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from spectra.hub.errors import HubIdError

SCHEME = "hf://"
# what a path normalisation (``pathlib.Path``, as a CLI's path argument) makes of ``hf://``
_SCHEME_COLLAPSED = "hf:/"
DEFAULT_REVISION = "main"  # huggingface_hub.constants.DEFAULT_REVISION

# One part of a repo id, as the Hub accepts it (huggingface_hub.utils.validate_repo_id):
# letters, digits, '_', '-', '.'; not starting or ending with '-' or '.'; no '--' or '..'.
_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_MAX_REPO_ID = 96
# revision: refs/pr/N and refs/convert/X keep their slashes, anything else stops at '/'
_REVISION = r"refs/pr/\d+|refs/convert/[^/@]+|[^/@]+"
_WITH_NAMESPACE = re.compile(
    rf"(?P<ns>[^/@]+)/(?P<name>[^/@]+)(?:@(?P<rev>{_REVISION}))?(?:/(?P<path>.*))?"
)
_WITHOUT_NAMESPACE = re.compile(rf"(?P<name>[^/@]+)(?:@(?P<rev>{_REVISION}))?")
_REPO_TYPE_PREFIXES = ("datasets", "spaces")


@dataclass(frozen=True)
class HubId:
    """A model repo on the Hub, a revision of it, and a place inside it.

    Attributes:
        repo_id: ``org/name`` (or ``name`` for a repo without namespace).
        revision: Branch, tag or commit hash; None means the default branch (``main``).
        path: A folder or file inside the repo, ``/``-separated, or None for the repo root.
        explicit: Written with ``hf://`` (never read as a local path).
    """

    repo_id: str
    revision: str | None = None
    path: str | None = None
    explicit: bool = True

    @property
    def ref(self) -> str:
        """The revision asked for, ``main`` when none was."""
        return self.revision or DEFAULT_REVISION

    @property
    def label(self) -> str:
        """A short name for tables: the last part of the path, or the repo's name."""
        last = (self.path or self.repo_id).rstrip("/").split("/")[-1]
        return last.rsplit(".", 1)[0] if self.path and "." in last else last

    def __str__(self) -> str:
        rev = "" if self.revision is None else "@" + self.revision.replace("/", "%2F")
        if self.revision is not None and re.fullmatch(r"refs/(pr|convert)/[^/]+", self.revision):
            rev = "@" + self.revision
        path = "" if self.path is None else "/" + self.path
        return f"{SCHEME}{self.repo_id}{rev}{path}"


def parse_hub_id(text: str) -> HubId | None:
    """Read ``text`` as a Hub id (module docstring), without touching the network.

    Args:
        text: A command-line argument or an adapter config's ``base_model_name_or_path``.

    Returns:
        The id; None when ``text`` has no ``hf://`` and is not of the form ``org/name...``
        (then it can only be a local path).

    Raises:
        HubIdError: ``text`` starts with ``hf://`` but the rest is not a valid model id.
    """
    explicit = has_scheme(text)
    body = _strip_scheme(text)
    try:
        return _parse(body, explicit=explicit)
    except HubIdError:
        if explicit:
            raise
        return None


def has_scheme(text: str) -> bool:
    """Whether ``text`` is written as a Hub id (``hf://``, or ``hf:/`` as a path argument
    normalised by ``pathlib`` turns it)."""
    return text.startswith(_SCHEME_COLLAPSED)


def _strip_scheme(text: str) -> str:
    for scheme in (SCHEME, _SCHEME_COLLAPSED):
        if text.startswith(scheme):
            return text[len(scheme) :]
    return text


def parse_named_base(name: str, revision: str | None) -> HubId | None:
    """The Hub id an adapter config names as its base (``base_model_name_or_path``, with its
    ``revision``): like :func:`parse_hub_id`, but a repo without namespace (``gpt2``) counts.

    Returns:
        The id, or None when ``name`` is no valid repo id (e.g. a local path).
    """
    try:
        hub_id = _parse(_strip_scheme(name), explicit=True)
    except HubIdError:
        return None
    if hub_id.path is not None:
        return None
    return HubId(hub_id.repo_id, revision or hub_id.revision, None, explicit=True)


def _parse(body: str, *, explicit: bool) -> HubId:
    where = SCHEME + body if explicit else body
    m = _WITH_NAMESPACE.fullmatch(body)
    if m is None and explicit:
        m = _WITHOUT_NAMESPACE.fullmatch(body)
    if m is None:
        raise HubIdError("not a Hub id; write hf://ORG/NAME[@REVISION][/PATH/IN/REPO]", path=where)
    groups = m.groupdict()
    ns, name = groups.get("ns"), groups["name"]
    if ns in _REPO_TYPE_PREFIXES:
        raise HubIdError(
            f"{ns} repositories hold no model weights; spectra reads model repos (hf://ORG/NAME)",
            path=where,
        )
    for part in (p for p in (ns, name) if p is not None):
        if not _PART.fullmatch(part) or "--" in part or ".." in part:
            raise HubIdError(
                f"{part!r} is not a valid repo name part: use letters, digits, '_', '-', '.', "
                "not starting or ending with '-' or '.', no '--' or '..'",
                path=where,
            )
    repo_id = name if ns is None else f"{ns}/{name}"
    if len(repo_id) > _MAX_REPO_ID:
        raise HubIdError(f"repo id longer than {_MAX_REPO_ID} characters", path=where)
    return HubId(
        repo_id, _revision(groups.get("rev"), where), _path(groups.get("path"), where), explicit
    )


def _revision(raw: str | None, where: str) -> str | None:
    if raw is None:
        return None
    rev = unquote(raw)
    if not rev.strip() or any(c.isspace() for c in rev):
        raise HubIdError(f"revision {raw!r} is empty or holds spaces", path=where)
    return rev


def _path(raw: str | None, where: str) -> str | None:
    if raw is None:
        return None
    parts = raw.rstrip("/").split("/")
    if raw.rstrip("/") == "":
        return None
    if any(p in ("", ".", "..") for p in parts) or "\\" in raw:
        raise HubIdError(
            f"path in repo {raw!r} must be a relative '/'-separated path without '.', '..' or "
            "empty parts",
            path=where,
        )
    return "/".join(parts)
