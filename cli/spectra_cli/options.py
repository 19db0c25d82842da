"""Options shared by several commands, declared once.

An :class:`OptionGroup` is a set of options a command receives packed as one object;
:func:`takes` adds a group's options to the command's signature (so Typer parses them and
``--help`` lists them) and hands the command the packed object. Every analysing command
(``compare``, ``figures``, ``report``, ``diagnose``) takes :data:`ANALYSIS` (packed into the
library's :class:`~spectra.loaders.LoadOptions`, :class:`~spectra.analysis.AnalysisOptions`
and :class:`~spectra.parallel.ExecutionOptions`); ``diagnose`` also takes :data:`THRESHOLDS`
(one option per :class:`~spectra.diagnose.Thresholds` field). A new shared analysis option
is one entry in :data:`SHARED` and one line in :func:`_pack`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from spectra.analysis import UNRELATED_THRESHOLD, AnalysisOptions, analyze_inputs
from spectra.diagnose import Thresholds
from spectra.engine.randomized import DEFAULT_OVERSAMPLE, DEFAULT_POWER_ITERS
from spectra.errors import OptionError
from spectra.hub import record_sources
from spectra.inputs import AnalysisInputs, known_kinds
from spectra.loaders import LoadOptions
from spectra.parallel import ExecutionOptions, make_executor
from spectra_cli.inputs import resolve_inputs

Base = Annotated[
    Path | None,
    typer.Option(
        "--base",
        help="Base checkpoint. Without it the first CKPT is the base when it is a full "
        "checkpoint and more follow; adapters alone need no base (docs/cli.md, Inputs).",
    ),
]
Label = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="Name of a CKPT (repeat: one per CKPT, in order)."),
]
Kind = Annotated[
    list[str] | None,
    typer.Option(
        "--kind",
        help=f"Force the kind of a CKPT instead of detecting it: {', '.join(known_kinds())} "
        "(repeat: one per CKPT, in order; 'auto' detects).",
    ),
]
Modules = Annotated[
    str | None, typer.Option("--modules", "-m", help="Regex: analyse only module paths it matches.")
]
Exclude = Annotated[
    str | None,
    typer.Option("--exclude", help="Regex: leave out module paths it matches (after --modules)."),
]
TopK = Annotated[int, typer.Option("--top-k", "-k", help="Subspace size for φ(i, j), i, j ≤ K.")]
DType = Annotated[str, typer.Option("--dtype", help="Compute dtype: float32 or float64.")]
Device = Annotated[str, typer.Option("--device", help="cpu, or cuda / cuda:N when present.")]
BaseMetrics = Annotated[
    bool,
    typer.Option(
        "--base-metrics/--no-base-metrics",
        help="Amplification factor and intruder dimensions against W0 (when a base is given).",
    ),
]
Intruders = Annotated[
    bool | None,
    typer.Option(
        "--intruders/--no-intruders",
        help="Intruder dimensions (full SVDs of W0 and W0 + ΔW per module). Default: only "
        "when estimated cheap (≤ 10 s in all); a skip is said in one line (docs/performance.md).",
        show_default=False,
    ),
]
Cache = Annotated[
    bool,
    typer.Option(
        "--cache/--no-cache",
        help="Keep W0's singular vectors in $SPECTRA_CACHE_DIR (default ~/.cache/spectra) for "
        "later runs against the same base.",
    ),
]
UnrelatedThreshold = Annotated[
    float,
    typer.Option(
        "--unrelated-threshold",
        help="Warn that BASE and a CKPT look like separately trained models when the median "
        "‖ΔW‖_F / ‖W0‖_F over modules is at least this.",
    ),
]
LoraAlpha = Annotated[
    float | None, typer.Option("--lora-alpha", help="α for LoRA files that do not store it.")
]
LoraScale = Annotated[
    float | None,
    typer.Option("--lora-scale", help="Full scaling s (instead of α/r) for LoRA files without α."),
]
SkipMismatched = Annotated[
    bool,
    typer.Option(
        "--skip-mismatched",
        help="Analyse the modules that match the base and list the others with the reason "
        "(default: refuse a checkpoint with any module that does not match).",
    ),
]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Write the full result as JSON to this path.")
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or notices on stderr (warnings stay).")
]
Similarity = Annotated[
    bool,
    typer.Option(
        "--similarity/--no-similarity",
        help="Subspace similarity φ of every pair of CKPTs (needs singular vectors; without it "
        "only singular values are computed: the fastest exact route).",
    ),
]
Svd = Annotated[
    str,
    typer.Option(
        "--svd",
        help="exact (every singular value) or randomized (top --top-k of dense updates, "
        "approximate: Halko et al.; factored updates stay exact).",
    ),
]
Oversample = Annotated[
    int, typer.Option("--oversample", help="Randomized SVD: extra random columns p.")
]
PowerIters = Annotated[
    int, typer.Option("--power-iters", help="Randomized SVD: power iterations q.")
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        help="Modules in parallel: N worker processes (threads = cores // N). Same JSON as a "
        "serial run with the same --threads; otherwise equal to the last float32 bit or so "
        "(LAPACK rounds differently per thread count).",
    ),
]
Executor = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="serial, process or dask (default: serial for 1 worker, process for more).",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786) for --executor dask; default: a local "
        "cluster of --workers processes.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", help="torch/BLAS threads per worker (default: cores // workers)."),
]

# The shared analysis options: (parameter name, Typer annotation, default), in --help order.
SHARED: tuple[tuple[str, Any, Any], ...] = (
    ("base", Base, None),
    ("label", Label, None),
    ("kind", Kind, None),
    ("modules", Modules, None),
    ("exclude", Exclude, None),
    ("top_k", TopK, 16),
    ("dtype", DType, "float32"),
    ("device", Device, "cpu"),
    ("base_metrics", BaseMetrics, True),
    ("intruders", Intruders, None),
    ("cache", Cache, True),
    ("unrelated_threshold", UnrelatedThreshold, UNRELATED_THRESHOLD),
    ("similarity", Similarity, True),
    ("svd", Svd, "exact"),
    ("oversample", Oversample, DEFAULT_OVERSAMPLE),
    ("power_iters", PowerIters, DEFAULT_POWER_ITERS),
    ("lora_alpha", LoraAlpha, None),
    ("lora_scale", LoraScale, None),
    ("skip_mismatched", SkipMismatched, False),
    ("workers", Workers, 1),
    ("executor", Executor, None),
    ("scheduler", Scheduler, None),
    ("threads", Threads, None),
    ("quiet", Quiet, False),
)


@dataclass(frozen=True)
class Analysis:
    """The shared analysis options of one command line, validated and packed.

    Attributes:
        base: ``--base``, or None.
        labels: ``--label`` values, or None (from the file names).
        kinds: ``--kind`` values (None for auto), or None (detect every kind).
        load: How files become ΔW (α, scaling, mismatched modules).
        options: How to analyse (:class:`~spectra.analysis.AnalysisOptions`).
        execution: Where modules run (:class:`~spectra.parallel.ExecutionOptions`).
        quiet: No progress or notices on stderr.
    """

    base: Path | None
    labels: list[str] | None
    kinds: list[Any] | None
    load: LoadOptions
    options: AnalysisOptions
    execution: ExecutionOptions
    quiet: bool

    def inputs(
        self, positionals: Sequence[Path], *, command: str, expand_folders: bool = False
    ) -> AnalysisInputs:
        """What to analyse, from the positional arguments and these options
        (:func:`spectra_cli.inputs.resolve_inputs`)."""
        return resolve_inputs(
            positionals,
            base=self.base,
            labels=self.labels,
            kinds=self.kinds,
            load=self.load,
            command=command,
            expand_folders=expand_folders,
            want_base=self.options.against_base,
            quiet=self.quiet,
        )

    def run(self, inputs: AnalysisInputs) -> dict[str, Any]:
        """The analysis of ``inputs`` with these options, on the chosen executor (Hub inputs
        recorded by id and commit: :func:`spectra.hub.record_sources`)."""
        with make_executor(self.execution) as pool:
            return record_sources(
                analyze_inputs(inputs, self.options, progress=Progress(self.quiet), executor=pool)
            )

    def say(self, message: str) -> None:
        """A notice on stderr (``wrote …``), unless quiet."""
        if not self.quiet:
            typer.echo(message, err=True)


def _pack(v: dict[str, Any]) -> Analysis:
    """The shared option values (by parameter name) as an :class:`Analysis`; every value is
    checked by the object it goes into."""
    options = AnalysisOptions(
        top_k=v["top_k"],
        modules=v["modules"],
        exclude=v["exclude"],
        dtype=v["dtype"],
        device=v["device"],
        against_base=v["base_metrics"],
        intruders={None: "auto", True: "always", False: "never"}[v["intruders"]],
        cache=v["cache"],
        unrelated_threshold=v["unrelated_threshold"],
        similarity=v["similarity"],
        svd=v["svd"],
        oversample=v["oversample"],
        power_iters=v["power_iters"],
    )
    execution = ExecutionOptions(
        executor=v["executor"], workers=v["workers"], scheduler=v["scheduler"], threads=v["threads"]
    )
    load = LoadOptions(
        lora_alpha=v["lora_alpha"],
        lora_scale=v["lora_scale"],
        skip_mismatched=v["skip_mismatched"],
    )
    return Analysis(
        base=v["base"],
        labels=v["label"],
        kinds=kinds_for(v["kind"]),
        load=load,
        options=options,
        execution=execution,
        quiet=v["quiet"],
    )


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class OptionGroup:
    """Options a command receives packed as one object.

    Attributes:
        param: The command's keyword parameter that receives the packed object.
        options: (parameter name, Typer annotation, default) per option, in ``--help`` order.
        pack: The object, from the option values by parameter name (it validates them).
    """

    param: str
    options: tuple[tuple[str, Any, Any], ...]
    pack: Callable[[dict[str, Any]], Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.options)


def takes(*groups: OptionGroup, **defaults: Any) -> Callable[[F], F]:
    """Decorator: the command takes every option of ``groups`` after its own, and receives
    each group packed, as the keyword argument ``group.param``.

    Args:
        groups: The option groups, in ``--help`` order.
        defaults: A different default for some options of this command, by parameter name
            (e.g. ``similarity=False``).

    Raises:
        TypeError: A default for no option of the groups, a missing ``param`` parameter, or
            a command parameter that redeclares a group option.
    """
    names = [n for g in groups for n in g.names]
    unknown = set(defaults) - set(names)
    if unknown:
        raise TypeError(f"not options of {[g.param for g in groups]}: {sorted(unknown)}")

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        missing = [g.param for g in groups if g.param not in sig.parameters]
        if missing:
            raise TypeError(f"{fn.__name__} must take the parameters {missing}")
        own = [p for p in sig.parameters.values() if p.name not in {g.param for g in groups}]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{fn.__name__} redeclares group options {sorted(clash)}")
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name, d), annotation=a
            )
            for g in groups
            for name, a, d in g.options
        ]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            packed = {g.param: g.pack({n: kwargs.pop(n) for n in g.names}) for g in groups}
            return fn(*args, **packed, **kwargs)

        params = [*own, *added]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        if sig.return_annotation is not inspect.Signature.empty:
            command.__annotations__["return"] = sig.return_annotation
        return command  # type: ignore[return-value]

    return wrap


ANALYSIS = OptionGroup("analysis", SHARED, _pack)

# One option per Thresholds field (``--dominated-top1-energy`` for ``dominated_top1_energy``),
# its default the field's; tests check that every field has its line here.
THRESHOLD_HELP: dict[str, str] = {
    "dominated_top1_energy": "Dominated when top-1 energy share ≥ this.",
    "dominated_erank_ratio": "Dominated when effective rank / rank ≤ this.",
    "dominated_min_rank": "Modules of smaller rank are not judged for dominance.",
    "collapsed_phi": "MultiLoRA collapsed when mean inter-module φ ≥ this.",
    "amplification": "Amplified when the amplification factor ≥ this.",
    "intruder_count": "Intruders when at least this many intruder dimensions.",
    "overall_share": "A method gets a verdict when this share of its modules do.",
}
THRESHOLDS = OptionGroup(
    "thresholds",
    tuple(
        (
            f.name,
            Annotated[
                type(f.default),
                typer.Option("--" + f.name.replace("_", "-"), help=THRESHOLD_HELP[f.name]),
            ],
            f.default,
        )
        for f in fields(Thresholds)
    ),
    lambda values: Thresholds(**values),
)


def analysis_command(**defaults: Any) -> Callable[[F], F]:
    """Decorator: the command takes the shared analysis options (:data:`SHARED`) after its
    own, and receives them as one keyword argument ``analysis: Analysis``
    (``takes(ANALYSIS, **defaults)``)."""
    return takes(ANALYSIS, **defaults)


def kinds_for(kind: Sequence[str] | None) -> list[Any] | None:
    """``--kind`` values with ``auto`` as None; None when none was given (detect all). The
    names are checked against the reader registry (:func:`spectra.inputs.known_kinds`); the
    count against the checkpoints by :class:`~spectra.inputs.AnalysisInputs`."""
    if not kind:
        return None
    allowed = ("auto", *known_kinds())
    bad = [k for k in kind if k not in allowed]
    if bad:
        raise OptionError(f"--kind {bad[0]!r} is not one of {', '.join(allowed)}")
    return [None if k == "auto" else k for k in kind]


class Progress:
    """A progress line on stderr for long work (module i of n); silent when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, done: int, total: int, module: str) -> None:
        if self.quiet:
            return
        end = "\n" if done == total else "\r"
        typer.echo(f"\r[{done}/{total}] {module[:70]:<70}", err=True, nl=False)
        if end == "\n":
            typer.echo("", err=True)
