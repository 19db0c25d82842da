"""``run_study``: the demo's methods over several seeds, the ablation, the claims table.

Output folder (``out``): the cached runs and analyses (:mod:`spectra.study.runner`), then
``study.json`` (settings, per-seed numbers, every arm's mean ± sd and 95 % interval, the
claims and the ablation; a few hundred kB at most), ``study.md`` (the claims and ablation
tables in Markdown) and ``figures/study_*.png``. Re-running with the same settings trains
nothing and re-analyses nothing: it reads the caches and rewrites the three outputs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spectra
from spectra.errors import OptionError
from spectra.io.atomic import atomic_path
from spectra.parallel import available_cores
from spectra.plots import save_figures
from spectra.recipe import RecipeConfig
from spectra.recipe.files import write_json
from spectra.study import runner
from spectra.study.arms import ABLATION_ARMS, MAIN_ARMS, MAIN_RUN, Arm
from spectra.study.claims import ablation, arm_table, claims
from spectra.study.figures import study_figures
from spectra.study.markdown import study_markdown

STUDY_FORMAT = "spectra.study/1"


@dataclass(frozen=True)
class StudySize:
    """How much the study trains.

    Attributes:
        recipe: The recipe settings every run starts from (its seed is replaced).
        seeds: Seeds of the main run (full fine-tuning, LoRA, MultiLoRA).
        ablation_seeds: Seeds of the ablation arms (a subset of ``seeds``: φ needs the full
            fine-tuning of the same seed).
        ablation_arms: Names of the ablation arms trained (:data:`ABLATION_ARMS`).
        modules: Regex (``re.search``) of the module paths analysed.
    """

    recipe: RecipeConfig
    seeds: tuple[int, ...]
    ablation_seeds: tuple[int, ...]
    ablation_arms: tuple[str, ...] = tuple(a.name for a in ABLATION_ARMS)
    modules: str = runner.MODULES

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise OptionError(f"give distinct seeds, got {list(self.seeds)}", key="seeds")
        if missing := sorted(set(self.ablation_seeds) - set(self.seeds)):
            raise OptionError(
                f"ablation seeds {missing} are not main seeds {list(self.seeds)}: φ against full "
                "fine-tuning needs the main run of the same seed",
                key="ablation_seeds",
            )
        known = {a.name for a in ABLATION_ARMS}
        if unknown := sorted(set(self.ablation_arms) - known):
            raise OptionError(f"unknown ablation arm(s) {unknown}; use {sorted(known)}")

    @classmethod
    def default(cls) -> StudySize:
        """The demo's settings (480 steps), 4 seeds; the ablation at 3 of them (28 runs: the
        size that fits the ~90 min budget on two cores, docs/study.md)."""
        return cls(RecipeConfig(), (0, 1, 2, 3), (0, 1, 2))

    @classmethod
    def quick(cls) -> StudySize:
        """Plumbing size for the tests: a few steps on a few dozen texts, 2 seeds, two
        ablation arms (every code path, a fraction of the runs)."""
        recipe = RecipeConfig.quick(
            n_train_per_task=24,
            n_test_per_task=12,
            steps=3,
            batch_per_task=2,
            probe_steps=3,
            max_length=20,
        )
        arms = ("multilora_n1", "multilora_init_lora")
        return cls(recipe, (0, 1), (0, 1), arms, modules=r"^encoder\.layer\.0\.")


@dataclass(frozen=True)
class StudyOptions:
    """Settings of :func:`run_study`.

    Attributes:
        out: The study folder (runs, caches, outputs).
        size: What to train (:meth:`StudySize.default` or :meth:`StudySize.quick`).
        ablation: Train and report the ablation arms.
        workers: Runs trained in parallel, each on one thread (default: the cores available).
        train: False: train nothing, report the complete runs found (a partial study).
    """

    out: Path = Path("spectra-study")
    size: StudySize = field(default_factory=StudySize.default)
    ablation: bool = True
    workers: int = field(default_factory=available_cores)
    train: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise OptionError(f"--workers must be >= 1, got {self.workers}", key="workers")

    def arms(self) -> tuple[Arm, ...]:
        """The main arms, and the ablation arms of the size unless ``ablation`` is off."""
        chosen = tuple(a for a in ABLATION_ARMS if a.name in self.size.ablation_arms)
        return MAIN_ARMS + (chosen if self.ablation else ())


def run_study(options: StudyOptions, *, say: Callable[[str], None] = lambda _m: None) -> dict:
    """Train (or reuse) every run, analyse each seed (or reuse), write the outputs.

    Returns:
        The study result (what ``study.json`` holds).
    """
    t0 = time.perf_counter()
    size, out = options.size, Path(options.out)
    arms = options.arms()
    ablation_seeds = size.ablation_seeds if options.ablation else ()
    jobs = runner.jobs_for(arms, size.recipe, size.seeds, ablation_seeds)
    if options.train:
        runner.train_all(jobs, out, workers=options.workers, say=say)
    train_s = time.perf_counter() - t0
    per_seed = []
    for seed in size.seeds:
        seed_jobs = {j.run: j for j in jobs if j.seed == seed}
        seed_arms = [a for a in arms if a.run_name in seed_jobs]
        numbers = runner.analyse_seed(
            seed, seed_arms, seed_jobs, out, size.recipe, modules=size.modules, say=say
        )
        if numbers["arms"]:
            per_seed.append(numbers)
    tasks = _tasks(per_seed)
    result = {
        "format": STUDY_FORMAT,
        "spectra_version": spectra.__version__,
        "settings": {
            "recipe": size.recipe.to_json_dict() | {"seed": None},
            "seeds": list(size.seeds),
            "ablation_seeds": list(ablation_seeds),
            "modules": size.modules,
            "level": 0.95,
            "interval": "Student t, paired by seed",
        },
        "arms": {
            a.name: {"title": a.title(size.recipe), "group": a.group, "rank": a.rank(size.recipe)}
            for a in arms
        },
        "complete_runs": sum(runner.is_complete(j, out) for j in jobs),
        "planned_runs": len(jobs),
        "per_seed": [_slim(s) for s in per_seed],
        "table": arm_table(per_seed, [a.name for a in arms]),
        "claims": claims(per_seed, tasks),
        "ablation": ablation(per_seed) if options.ablation else [],
        "histograms": {s["seed"]: _histograms(s) for s in per_seed},
        "time_s": _times(jobs, out) | {"this_call": round(time.perf_counter() - t0, 1)},
        "train_call_s": round(train_s, 1),
    }
    write_outputs(result, out)
    return result


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``study.json``, ``study.md`` and ``figures/study_*.png`` under ``out``.

    Returns:
        Name → path (``json``, ``markdown``, and each figure's name).
    """
    paths = {"json": write_json(out / "study.json", result)}
    with atomic_path(out / "study.md") as tmp:
        tmp.write_text(study_markdown(result), encoding="utf-8")
    paths["markdown"] = out / "study.md"
    if result["per_seed"]:
        figures = study_figures(result)
        for name, path in zip(
            figures, save_figures(figures, out / "figures", ("png",)), strict=True
        ):
            paths[name] = path
    return paths


def _tasks(per_seed: list[dict[str, Any]]) -> list[str]:
    for s in per_seed:
        for numbers in s["arms"].values():
            return list(numbers["accuracy"])
    return []


def _slim(seed: dict[str, Any]) -> dict[str, Any]:
    """A seed's numbers without the histograms (kept once, under ``histograms``)."""
    return {
        "seed": seed["seed"],
        "runs": seed["runs"],
        "arms": {
            name: {k: v for k, v in numbers.items() if k != "histogram"}
            for name, numbers in seed["arms"].items()
        },
    }


def _histograms(seed: dict[str, Any]) -> dict[str, Any]:
    return {
        name: n["histogram"]
        for name, n in seed["arms"].items()
        if name in ("full", "lora", "multilora")
    }


def _times(jobs: list[runner.Job], out: Path) -> dict[str, Any]:
    """Training time of the complete runs, from their logs: wall and CPU seconds."""
    wall = cpu = 0.0
    for job in jobs:
        if runner.is_complete(job, out):
            log = runner.read_log(job, out)
            wall += float(log["wall_s"]["total"])
            cpu += sum(float(m["cpu_s"]) for m in log["methods"].values())
    return {"runs_wall_sum": round(wall, 1), "runs_train_cpu_sum": round(cpu, 1)}


def with_seeds(
    size: StudySize, seeds: tuple[int, ...] | None, ablation_seeds: tuple[int, ...] | None
) -> StudySize:
    """``size`` with other seeds (None keeps its own)."""
    seeds = seeds or size.seeds
    abl = (
        ablation_seeds
        if ablation_seeds is not None
        else tuple(s for s in size.ablation_seeds if s in seeds)
    )
    return dataclasses.replace(size, seeds=seeds, ablation_seeds=abl)


__all__ = ["MAIN_RUN", "StudyOptions", "StudySize", "run_study", "with_seeds"]
