"""Training and analysing the study's runs, each cached.

Layout under the study folder::

    base.safetensors, base.pt         the pretrained encoder, written once, hard-linked into runs
    runs/<run>-s<seed>-<hash>/        one recipe run (spectra.recipe.run_recipe's layout)
    analysis/s<seed>-<key>.json       the numbers of every arm of one seed (spectra.study.extract)

A run is reused when its folder holds a complete ``log.json`` with the same settings hash; a
seed's analysis is reused when the runs it read (their hashes) and the analysis settings are
the same. Each run trains on one thread (bitwise reproducible, see the recipe); ``workers``
runs go in parallel processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectra.analysis import AnalysisOptions, analyze
from spectra.parallel import ExecutionOptions, make_executor
from spectra.recipe import RecipeConfig, run_recipe, write_base
from spectra.recipe.files import write_json
from spectra.recipe.log import LOG_NAME, read_complete_log
from spectra.study.arms import MAIN_RUN, Arm
from spectra.study.extract import arm_numbers

Say = Callable[[str], None]
ANALYSIS_VERSION = "1"  # bump when extract.py changes what it computes
MODULES = r"^encoder\.layer\."  # the adapted transformer layers (as the demo)


@dataclass(frozen=True)
class Job:
    """One recipe run of the study."""

    run: str  # "main" or an ablation arm's name
    seed: int
    config: RecipeConfig

    def folder(self, study_dir: Path) -> Path:
        return study_dir / "runs" / f"{self.run}-s{self.seed}-{self.config.settings_hash()[:8]}"


def jobs_for(
    arms: Sequence[Arm], base: RecipeConfig, seeds: Sequence[int], ablation_seeds: Sequence[int]
) -> list[Job]:
    """The runs to train, most useful first: the main runs of the seeds the ablation also
    uses, then the ablation seed by seed, then the remaining main runs."""
    main_arm = next(a for a in arms if a.run_name == MAIN_RUN)
    ablation = [a for a in arms if a.run_name != MAIN_RUN]
    first = [s for s in seeds if s in ablation_seeds]
    jobs = [Job(MAIN_RUN, s, main_arm.config(base, s)) for s in first]
    jobs += [Job(a.name, s, a.config(base, s)) for s in ablation_seeds for a in ablation]
    jobs += [Job(MAIN_RUN, s, main_arm.config(base, s)) for s in seeds if s not in first]
    return jobs


def _train_one(job: Job, study_dir: Path) -> tuple[str, float]:
    """Train (or reuse) one run; returns (folder, seconds). Top level: runs in a worker.

    The recipe's progress lines go to ``progress.log`` in the run's folder (with the time),
    so a long study can be watched run by run.
    """
    t0 = time.perf_counter()
    folder = job.folder(study_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "progress.log").open("a", encoding="utf-8") as log:

        def progress(msg: str) -> None:
            log.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
            log.flush()

        run_recipe(job.config, folder, base_from=study_dir, progress=progress)
    return str(folder), time.perf_counter() - t0


def train_all(jobs: Sequence[Job], study_dir: Path, *, workers: int, say: Say) -> None:
    """Train every job not already complete, ``workers`` at a time (processes when > 1)."""
    if not (study_dir / "base.safetensors").is_file() or not (study_dir / "base.pt").is_file():
        write_base(study_dir)
    todo = [j for j in jobs if not is_complete(j, study_dir)]
    say(f"{len(jobs) - len(todo)} of {len(jobs)} runs cached; training {len(todo)}")
    if workers <= 1:
        for i, job in enumerate(todo, 1):
            _, wall = _train_one(job, study_dir)
            say(f"[{i}/{len(todo)}] {job.run} seed {job.seed}: {wall:.0f} s")
        return
    ctx = multiprocessing.get_context("spawn")  # torch's thread pools do not survive fork
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_train_one, j, study_dir): j for j in todo}
        for i, fut in enumerate(cf.as_completed(futures), 1):
            job = futures[fut]
            _, wall = fut.result()
            say(f"[{i}/{len(todo)}] {job.run} seed {job.seed}: {wall:.0f} s")


def is_complete(job: Job, study_dir: Path) -> bool:
    """True when the job's folder holds a complete run with its settings hash."""
    return read_complete_log(job.folder(study_dir), job.config.settings_hash()) is not None


def read_log(job: Job, study_dir: Path) -> dict[str, Any]:
    """The run's ``log.json``."""
    return json.loads((job.folder(study_dir) / LOG_NAME).read_text(encoding="utf-8"))


def analyse_seed(
    seed: int,
    arms: Sequence[Arm],
    jobs: dict[str, Job],
    study_dir: Path,
    base: RecipeConfig,
    *,
    modules: str = MODULES,
    say: Say,
) -> dict[str, Any]:
    """The numbers of every arm of one seed whose run is complete (cached).

    Args:
        seed: The seed.
        arms: The arms to read; those whose run is missing or incomplete are left out.
        jobs: Run name → its job for this seed.
        study_dir: The study folder.
        base: The study's base recipe settings (for the arms' ranks).
        modules: Regex of the module paths analysed.
        say: Progress messages.

    Returns:
        ``{"seed", "arms": {name: numbers + accuracy + wall_s}, "runs": {run: hash}}``; empty
        ``arms`` when the main run of the seed is not complete (φ needs its full fine-tuning).
    """
    done = {run: job for run, job in jobs.items() if is_complete(job, study_dir)}
    present = [a for a in arms if a.run_name in done]
    if MAIN_RUN not in done:
        return {"seed": seed, "arms": {}, "runs": {}}
    runs = {run: job.config.settings_hash() for run, job in sorted(done.items())}
    top_k = max((a.rank(base) or 1) for a in present)
    options = AnalysisOptions(top_k=top_k, modules=modules, against_base=False)
    key_text = json.dumps(
        [ANALYSIS_VERSION, runs, [a.name for a in present], top_k, modules], sort_keys=True
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache = study_dir / "analysis" / f"s{seed}-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    say(f"analysing seed {seed}: {', '.join(a.name for a in present)}")
    logs = {run: read_log(job, study_dir) for run, job in done.items()}
    paths = [_checkpoint(done[a.run_name], a, logs[a.run_name], study_dir) for a in present]
    # one thread, as the training: on a shared machine a second BLAS thread slows SVDs badly
    with make_executor(ExecutionOptions(threads=1)) as executor:
        result = analyze(
            study_dir / "base.safetensors",
            paths,
            labels=[a.name for a in present],
            options=options,
            executor=executor,
        )
    numbers = {}
    for a in present:
        log = logs[a.run_name]
        numbers[a.name] = arm_numbers(result, a.name, a.rank(base)) | {
            "accuracy": log["accuracy"][a.method],
            "wall_s": log["methods"][a.method]["wall_s"],
            "cpu_s": log["methods"][a.method]["cpu_s"],
        }
    out = {"seed": seed, "arms": numbers, "runs": runs}
    write_json(cache, out)
    return out


def _checkpoint(job: Job, arm: Arm, log: dict[str, Any], study_dir: Path) -> Path:
    return job.folder(study_dir) / log["files"][arm.method]
