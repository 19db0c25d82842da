"""The end-to-end demo: train the recipe's three methods (or reuse a cached run), compare the
encoder updates, and write the figures, the JSON result and the HTML report.

Output layout under ``out``: ``run/`` (checkpoints and ``log.json`` from
:func:`spectra.recipe.run_recipe`), ``results.json``, ``figures/`` (PNG + SVG),
``report/report.html`` (+ CSV tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from spectra.analysis import AnalysisOptions, Progress, analyze
from spectra.parallel import ExecutionOptions, make_executor
from spectra.plots import all_figures, save_figures
from spectra.recipe import RecipeConfig, run_recipe
from spectra.report import write_report
from spectra.results import save_result


@dataclass(frozen=True)
class DemoOptions:
    """Settings of :func:`run_demo`.

    Attributes:
        out: Output directory.
        quick: The plumbing-sized recipe (:meth:`RecipeConfig.quick`) instead of the default.
        seed: Recipe seed.
        threads: Torch threads for training and analysis (None: all cores). Training is
            bitwise reproducible only at the same thread count; 1 (the default) is that on
            every machine (of the same CPU type and library versions).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        retrain: Ignore a cached run with the same settings.
        top_k: Subspace size for φ.
        modules: Regex of the modules compared: the encoder's transformer layers, where both
            adapters sit. The embeddings change only under full fine-tuning; including them
            would compare 39 full-FT modules with 36 adapter modules.
    """

    out: Path = Path("spectra-demo")
    quick: bool = False
    seed: int = 0
    threads: int | None = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    retrain: bool = False
    top_k: int = 16
    modules: str = r"^encoder\.layer\."


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote: the recipe's result, the analysis result and output paths."""

    recipe: Any  # spectra.recipe.RecipeResult
    result: dict[str, Any]
    result_json: Path
    figures_dir: Path
    report: Path


def run_demo(
    options: DemoOptions,
    *,
    say: Callable[[str], None] = lambda _m: None,
    progress: Progress | None = None,
) -> DemoResult:
    """Train (or reuse), analyse, draw and report. See the module docstring for the layout."""
    make = RecipeConfig.quick if options.quick else RecipeConfig
    config = make(seed=options.seed, num_threads=options.threads, device=options.device)
    recipe = run_recipe(config, options.out / "run", progress=say, reuse=not options.retrain)
    files = recipe.files
    analysis_device = "cuda" if options.device != "cpu" and torch.cuda.is_available() else "cpu"
    say("analysing the three updates ...")
    # the analysis keeps the demo's thread count (serial executor: the same budget as training)
    with make_executor(ExecutionOptions(threads=options.threads)) as executor:
        result = analyze(
            files["base"],
            [files["full"], files["lora"], files["multilora"]],
            labels=["full", "lora", "multilora"],
            options=AnalysisOptions(
                top_k=options.top_k, modules=options.modules, device=analysis_device
            ),
            progress=progress,
            executor=executor,
        )
    result_json = save_result(result, options.out / "results.json")
    say("drawing figures and writing the report ...")
    figures = all_figures(result)
    save_figures(figures, options.out / "figures")
    report = write_report(result, options.out / "report", figures=figures)
    return DemoResult(
        recipe=recipe,
        result=result,
        result_json=result_json,
        figures_dir=options.out / "figures",
        report=report,
    )
