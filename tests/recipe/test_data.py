"""The task builders read real data from installed packages and split it cleanly."""

from __future__ import annotations

import csv
import re
from collections import Counter

import pytest

from spectra.recipe.config import RecipeConfig
from spectra.recipe.data import build_tasks, compare_task, iris_task, sentiment_task
from spectra.recipe.deps import MissingDependencyError, package_file

CONFIG = RecipeConfig(n_train_per_task=300, n_test_per_task=100)


def _lexicon() -> dict[str, float]:
    path = package_file("vaderSentiment", "vader_lexicon.txt", what="lexicon")
    with path.open(encoding="utf-8") as f:
        return {line.split("\t")[0]: float(line.split("\t")[1]) for line in f}


def _assert_clean_split(task, n_train: int, n_test: int) -> None:
    assert len(task.train_texts) == len(task.train_labels) == n_train
    assert len(task.test_texts) == len(task.test_labels) == n_test
    assert not set(task.train_texts) & set(task.test_texts)  # held out means held out
    assert len(set(task.train_texts)) == n_train  # no repeats within a split either
    for labels in (task.train_labels, task.test_labels):
        counts = Counter(labels)
        assert set(counts) == set(range(len(task.labels)))
        share = max(counts.values()) / len(labels)
        assert share <= 1 / len(task.labels) + 0.02  # stratified: balanced within rounding


def test_sentiment_is_vader_human_ratings_with_polarity_labels() -> None:
    task = sentiment_task(CONFIG)
    lexicon = _lexicon()
    _assert_clean_split(task, 300, 100)
    assert task.labels == ("negative", "positive")
    assert task.source.endswith("vader_lexicon.txt")
    for text, label in zip(
        task.train_texts + task.test_texts, task.train_labels + task.test_labels, strict=True
    ):
        rating = lexicon[text]  # KeyError if the word is not from the lexicon
        assert abs(rating) >= CONFIG.sentiment_threshold  # near-neutral words dropped
        assert label == int(rating > 0)
        assert re.fullmatch(r"[a-z][a-z'\-]*", text)  # words, no emoticons
    assert "good" in lexicon and lexicon["good"] > 1  # the real lexicon, not a stub


def test_compare_labels_are_the_true_answers_and_mirrors_never_cross_the_split() -> None:
    task = compare_task(CONFIG)
    _assert_clean_split(task, 300, 100)
    pattern = re.compile(r"is (\d+) larger than (\d+)\?")
    pairs = {}
    for split_texts, split_labels, split in (
        (task.train_texts, task.train_labels, "train"),
        (task.test_texts, task.test_labels, "test"),
    ):
        for text, label in zip(split_texts, split_labels, strict=True):
            a, b = (int(x) for x in pattern.fullmatch(text).groups())
            assert a != b and min(a, b) >= 0 and max(a, b) <= 999
            assert task.labels[label] == ("yes" if a > b else "no")
            key = frozenset((a, b))
            assert key not in pairs  # each unordered pair asked once, in one split
            pairs[key] = split


def test_iris_rows_are_scikit_learns_csv_verbalised() -> None:
    task = iris_task(CONFIG)
    path = package_file("sklearn", "datasets/data/iris.csv", what="iris")
    with path.open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    truth = {f"sepal {r[0]} by {r[1]} cm, petal {r[2]} by {r[3]} cm": int(r[4]) for r in rows}
    assert len(truth) == 149  # 150 flowers, one measured twice
    assert task.labels == ("setosa", "versicolor", "virginica")
    _assert_clean_split(task, 105, 44)  # 30 % of the 149 distinct flowers held out
    for text, label in zip(
        task.train_texts + task.test_texts, task.train_labels + task.test_labels, strict=True
    ):
        assert truth[text] == label


def test_splits_follow_the_seed() -> None:
    first, again = build_tasks(CONFIG), build_tasks(CONFIG)
    other = build_tasks(RecipeConfig(n_train_per_task=300, n_test_per_task=100, seed=1))
    assert [t.name for t in first] == ["sentiment", "compare", "iris"]
    for a, b, c in zip(first, again, other, strict=True):
        assert a == b  # deterministic given the seed
        assert a.test_texts != c.test_texts  # and the seed matters


def test_majority_share_is_the_chance_level() -> None:
    task = iris_task(CONFIG)
    assert task.majority_share() == pytest.approx(15 / 44)


def test_missing_package_names_the_install_command() -> None:
    with pytest.raises(MissingDependencyError, match=r'pip install "spectra-ft\[demo\]"'):
        package_file("spectra_no_such_package", "data.txt", what="test data")
    with pytest.raises(MissingDependencyError, match="missing from the installed package"):
        package_file("vaderSentiment", "no_such_file.txt", what="test data")
