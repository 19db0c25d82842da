"""Verdicts: judgements drawn from an analysis' numbers (e.g. "looks like a merged adapter")."""
