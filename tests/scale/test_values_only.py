"""Singular vectors are computed only when a pair of checkpoints will use them."""

from __future__ import annotations

import pytest

import spectra.analysis_module as analysis_module
from spectra.analysis import AnalysisOptions, analyze

from .conftest import Synthetic


@pytest.fixture
def asked(monkeypatch) -> list[int]:
    """The ``vectors`` argument of every spectrum analyze computes."""
    calls: list[int] = []
    real = analysis_module.spectrum

    def spy(update, *, vectors=0, device="cpu"):
        calls.append(vectors)
        return real(update, vectors=vectors, device=device)

    monkeypatch.setattr(analysis_module, "spectrum", spy)
    return calls


def test_single_checkpoint_computes_values_only(synthetic: Synthetic, asked) -> None:
    result = analyze(
        synthetic.base, [synthetic.full], options=AnalysisOptions(top_k=4, against_base=False)
    )
    assert asked == [0] * 16 and result["similarity"] == []


def test_pairs_get_vectors_only_for_modules_both_have(synthetic: Synthetic, asked) -> None:
    opts = AnalysisOptions(top_k=4, against_base=False)
    result = analyze(synthetic.base, [synthetic.full, synthetic.lora], options=opts)
    # 14 modules in both (7 per layer): 2 × 14 spectra with vectors; embed + lm_head: values
    assert sorted(asked) == [0, 0] + [4] * 28
    assert len(result["similarity"]) == 14 * 2  # left and right per module


def test_no_similarity_computes_values_only(synthetic: Synthetic, asked) -> None:
    opts = AnalysisOptions(top_k=4, against_base=False, similarity=False)
    result = analyze(synthetic.base, [synthetic.full, synthetic.lora], options=opts)
    assert set(asked) == {0} and result["similarity"] == []
    assert result["settings"]["similarity"] is False
    assert all(
        s["mean_phi"]["lora" if s["label"] == "full" else "full"]["left"] is None
        for s in result["summary"]
    )
