"""align_modules: exact names, an added/removed leading prefix, ambiguity refused."""

from __future__ import annotations

import pytest

from spectra.errors import CheckpointMismatchError
from spectra.loaders.align import align_modules

BERT = [f"encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "key")]


def test_exact_names_map_to_themselves() -> None:
    a = align_modules(BERT, BERT + ["pooler.dense"])
    assert a.mapping == {n: n for n in BERT}
    assert a.unmatched == [] and a.prefixed == {}
    assert a.unused_base == ["pooler.dense"]


@pytest.mark.parametrize("prefix", ["bert.", "base_model.model.", "a.b.c."])
def test_added_prefix_in_either_direction(prefix: str) -> None:
    tuned = [prefix + n for n in BERT]
    a = align_modules(tuned, BERT)
    assert a.mapping == {prefix + n: n for n in BERT}
    assert a.prefixed == a.mapping and a.unmatched == [] and a.unused_base == []
    b = align_modules(BERT, tuned)  # base carries the prefix instead
    assert b.mapping == {n: prefix + n for n in BERT}


def test_dotted_components_not_characters() -> None:
    # "xquery" ends with "query" as a string but not as a dotted component
    a = align_modules(["self.query"], ["self.xquery", "other.self.query"])
    assert a.mapping == {"self.query": "other.self.query"}
    a = align_modules(["attention.self.query"], ["ttention.self.query"])
    assert a.mapping == {} and a.unmatched == ["attention.self.query"]


def test_replaced_prefix_is_not_a_match() -> None:
    a = align_modules(["roberta.encoder.layer.0.dense"], ["bert.encoder.layer.0.dense"])
    assert a.mapping == {}
    assert a.unmatched == ["roberta.encoder.layer.0.dense"]
    assert a.unused_base == ["bert.encoder.layer.0.dense"]


def test_ambiguous_prefix_lists_candidates() -> None:
    with pytest.raises(CheckpointMismatchError) as err:
        align_modules(
            ["layer.0.dense"],
            ["text.layer.0.dense", "vision.layer.0.dense", "x"],
            path="tuned.safetensors",
            base_path="base.safetensors",
        )
    msg = str(err.value)
    assert "'text.layer.0.dense'" in msg and "'vision.layer.0.dense'" in msg
    assert "tuned.safetensors" in msg and "base.safetensors" in msg and "'x'" not in msg


def test_exact_match_wins_and_is_not_offered_as_a_candidate() -> None:
    # "encoder.x" matches exactly; "bert.encoder.x" would also suffix-match it, but the
    # base name is taken, so it is unmatched rather than a double claim.
    a = align_modules(["encoder.x", "bert.encoder.x"], ["encoder.x"])
    assert a.mapping == {"encoder.x": "encoder.x"}
    assert a.unmatched == ["bert.encoder.x"]


def test_two_names_claiming_one_base_name_are_refused() -> None:
    with pytest.raises(CheckpointMismatchError, match="'a.enc.q'.*'b.enc.q'"):
        align_modules(["a.enc.q", "b.enc.q"], ["enc.q"])


def test_prefix_note_names_count_and_an_example() -> None:
    assert align_modules(BERT, BERT).prefix_note() is None
    note = align_modules(["bert." + n for n in BERT], BERT).prefix_note()
    assert note is not None and note.startswith(f"{len(BERT)} modules") and "'bert." in note
