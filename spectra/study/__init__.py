"""The study: the demo's three methods over several seeds, a MultiLoRA ablation, and the
MultiLoRA paper's claims as a table with intervals and verdicts (``spectra study``)."""

from spectra.study.study import StudyOptions, StudySize, run_study, with_seeds

__all__ = ["StudyOptions", "StudySize", "run_study", "with_seeds"]
