"""From the command line's paths to :class:`~spectra.inputs.AnalysisInputs`: the one place
that reads the positional arguments of ``compare``, ``figures``, ``report`` and ``diagnose``.

How the positional arguments are read (docs/cli.md, "Inputs"):

* ``--base BASE`` given: every positional argument is a checkpoint. A positional argument that
  is the base file itself is refused.
* no ``--base``, and the first positional argument is a full checkpoint (not an adapter)
  followed by at least one more: the first is the base, the rest are checkpoints. This is
  ``spectra compare BASE CKPT...``, unchanged.
* no ``--base``, and the first positional argument is an adapter (LoRA, DoRA, MultiLoRA,
  kohya, LyCORIS, a plain LoRA file): there is no base; every positional argument is a
  checkpoint, analysed on its own.

Refused, with the command to write instead: a single full checkpoint and no base (its ΔW
needs one); a full checkpoint after an adapter as first argument (put the base first or pass
``--base``). The kind of the first argument is detected from its files (``--kind`` applies to
the checkpoints, after this reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from spectra.errors import AmbiguousInputError, FileFormatError, OptionError
from spectra.hub import base_for, labels_for, resolve
from spectra.inputs import AnalysisInputs
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, detect_kind
from spectra.loaders.detect import ADAPTER_CONFIG_NAME, find_peft_files, kind_from_tensors
from spectra.update import Kind

# files in a folder of adapters that may hold one (a PEFT adapter is a folder of its own)
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def local_path(arg: str | Path, *, quiet: bool = False) -> Path:
    """The local file or directory a command-line input names (every input passes here): the
    path itself when it exists, else the files of the Hugging Face Hub id it names, fetched
    into the huggingface_hub cache (:func:`spectra.hub.resolve`, docs/hub.md)."""
    return resolve(arg, quiet=quiet, report=None if quiet else _say)


def hub_base(
    base: str | Path | None,
    checkpoints: Sequence[Path],
    load: LoadOptions,
    *,
    want_base: bool,
    quiet: bool,
) -> Path | None:
    """The base as a local path: ``--base`` (a Hub model is fetched only in the shards the
    checkpoints need), or without it the base a Hub adapter's config names when the analysis
    wants one (:func:`spectra.hub.base_for`)."""
    report = None if quiet else _say
    found, _ = base_for(
        base, checkpoints, want_base=want_base, load=load, quiet=quiet, report=report
    )
    return None if found is None else found.path


def _say(message: str) -> None:
    typer.echo(message, err=True)


def resolve_inputs(
    positionals: Sequence[str | Path],
    *,
    base: str | Path | None,
    labels: Sequence[str] | None,
    kinds: Sequence[Kind | None] | None,
    load: LoadOptions,
    command: str,
    expand_folders: bool = False,
    want_base: bool = False,
    quiet: bool = False,
) -> AnalysisInputs:
    """Base and checkpoints from the positional arguments and ``--base`` (module docstring).

    Args:
        positionals: The positional paths, in order.
        base: ``--base``, or None.
        labels: ``--label`` values (one per checkpoint) or None.
        kinds: ``--kind`` values, ``None`` for auto (one per checkpoint) or None.
        load: Load settings shared by every checkpoint.
        command: The command's name, for the messages (``compare``, ``diagnose``, ...).
        expand_folders: A directory that is not itself a checkpoint stands for the adapters
            and checkpoint files directly inside it (``diagnose adapters/``).
        want_base: The analysis uses a base when there is one: adapters from the Hub without
            ``--base`` get the base their config names (docs/hub.md).
        quiet: No download progress on stderr.

    Raises:
        AmbiguousInputError: One of the refused cases above.
        OptionError: No positional argument, or labels / kinds do not match the checkpoints.
    """
    paths = [local_path(p, quiet=quiet) for p in positionals]
    if expand_folders:
        paths = [q for p in paths for q in _expand(p)]
    if not paths:
        raise OptionError(f"give at least one checkpoint: spectra {command} CKPT [CKPT ...]")
    base_path = None if base is None else hub_base(base, paths, load, want_base=True, quiet=quiet)
    if base_path is not None:
        _refuse_base_as_checkpoint(base_path, paths)
        checkpoints = paths
    elif _is_full(paths[0]):
        if len(paths) == 1:
            raise AmbiguousInputError(
                f"a full checkpoint's ΔW needs its base: write `spectra {command} BASE "
                f"{paths[0]}` or `spectra {command} --base BASE {paths[0]}`",
                path=paths[0],
            )
        base_path, checkpoints = paths[0], paths[1:]
    else:
        checkpoints = paths
        _refuse_full_without_base(checkpoints, command)
        base_path = hub_base(None, checkpoints, load, want_base=want_base, quiet=quiet)
    labels = labels if labels is not None else labels_for(checkpoints)  # Hub ids: repo names
    return AnalysisInputs.of(base_path, checkpoints, labels=labels, kinds=kinds, load=load)


def _is_full(path: Path) -> bool:
    """Whether ``path`` holds a full checkpoint (not an adapter), from its files; a file that
    cannot be opened is refused as it would be as a base."""
    if not path.exists():
        raise FileFormatError("no such file or directory; check the path", path=path)
    if find_peft_files(path) is not None:
        return False
    return kind_from_tensors(open_tensors(path)) == "full"


def _refuse_base_as_checkpoint(base: Path, paths: list[Path]) -> None:
    for p in paths:
        if p.exists() and base.exists() and p.resolve() == base.resolve():
            raise AmbiguousInputError(
                "given both as --base and as a checkpoint; with --base every positional "
                "argument is a checkpoint: drop it from the positional arguments",
                path=p,
            )


def _refuse_full_without_base(checkpoints: list[Path], command: str) -> None:
    """The first argument is an adapter, so none is the base: a later full checkpoint has no
    base to be compared with."""
    for p in checkpoints[1:]:
        if _is_full(p):
            raise AmbiguousInputError(
                f"a full checkpoint needs its base, but the first argument {checkpoints[0]} is "
                f"an adapter, so no base was given: put the base first (`spectra {command} BASE "
                f"{checkpoints[0]} {p} ...`) or pass --base BASE",
                path=p,
            )


def _expand(path: Path) -> list[Path]:
    """``path`` itself, or, for a directory that is not a checkpoint, the adapters directly
    inside it (sorted by name): adapter folders (with ``adapter_config.json``) and adapter
    files (a full checkpoint's shards or files are never picked)."""
    if not path.is_dir() or (path / ADAPTER_CONFIG_NAME).is_file():
        return [path]
    try:
        detect_kind(path)
        return [path]
    except FileFormatError as e:
        not_a_checkpoint = e
    found = sorted(
        p
        for p in path.iterdir()
        if (p.is_dir() and (p / ADAPTER_CONFIG_NAME).is_file())
        or (p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES and not _is_full(p))
    )
    if not found:  # not a folder of adapters either: what detection said
        raise not_a_checkpoint
    return found
