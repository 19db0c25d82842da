"""The three tasks of the recipe's multi-task mix, built at run time from installed packages.

The mix is chosen so that the tasks differ in nature, which is what MultiLoRA's
"democratization" argument is about (one LoRA's few top directions serve one dominant task):

* ``sentiment`` — lexical semantics: the polarity of an English word from VADER's
  human-rated lexicon (Hutto & Gilbert 2014, MIT licence; ``vader_lexicon.txt`` in the
  ``vaderSentiment`` wheel). Each entry is the mean of ten human ratings in [-4, 4]; a mean
  ≥ +threshold is ``positive``, ≤ -threshold ``negative``, anything between is dropped as
  near-neutral. Only alphabetic words are kept (no emoticons). The majority class is
  subsampled so both classes are equally common.
* ``compare`` — symbolic reasoning: "is 47 larger than 112?" → ``yes``/``no`` over distinct
  integers 0–999, generated from the seed (half the pairs answer yes by construction).
* ``iris`` — numeric measurements to category: Fisher's/Anderson's iris flowers (150 rows,
  three species, 50 each) from the copy scikit-learn ships (``sklearn/datasets/data/iris.csv``;
  scikit-learn is installed as a dependency of sentence-transformers, which the model package
  requires), verbalised as "sepal 5.1 by 3.5 cm, petal 1.4 by 0.2 cm" → species; the
  few repeated flowers are kept once.

Every split is stratified by label and deterministic given the seed; train and test never
share an item (a word, a number pair, a flower).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

import numpy as np

from spectra.recipe.config import RecipeConfig
from spectra.recipe.deps import package_file

_WORD = re.compile(r"[a-z][a-z'\-]*")  # an English word, no digits or punctuation faces
_IRIS_TEST_SHARE = 0.3  # iris is small: about 100 train / 40 test flowers at most


@dataclass(frozen=True)
class TaskData:
    """One classification task with a held-out split.

    Attributes:
        name: Short identifier, also the head's name (``sentiment``, ``compare``, ``iris``).
        labels: Class names; label ``k`` of an example means ``labels[k]``.
        train_texts, train_labels: Training examples, the same length.
        test_texts, test_labels: Held-out examples, disjoint from the training ones.
        source: Where the data came from (a file path, or how it was generated).
    """

    name: str
    labels: tuple[str, ...]
    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    test_texts: tuple[str, ...]
    test_labels: tuple[int, ...]
    source: str

    def majority_share(self) -> float:
        """Test accuracy of always predicting the most common test label (the chance level)."""
        counts = np.bincount(np.asarray(self.test_labels), minlength=len(self.labels))
        return float(counts.max() / counts.sum())


def build_tasks(config: RecipeConfig) -> tuple[TaskData, ...]:
    """The recipe's task mix, in a fixed order: sentiment, compare, iris.

    Raises:
        MissingDependencyError: vaderSentiment or scikit-learn is not installed.
    """
    return (sentiment_task(config), compare_task(config), iris_task(config))


def sentiment_task(config: RecipeConfig) -> TaskData:
    """Word polarity from VADER's human-rated lexicon (see the module docstring)."""
    path = package_file("vaderSentiment", "vader_lexicon.txt", what="VADER's sentiment lexicon")
    by_label: dict[int, list[str]] = {0: [], 1: []}  # 0 negative, 1 positive
    with path.open(encoding="utf-8") as f:
        for line in f:
            token, mean = line.split("\t")[:2]  # token, mean rating, std, [10 ratings]
            rating = float(mean)
            if _WORD.fullmatch(token) and abs(rating) >= config.sentiment_threshold:
                by_label[int(rating > 0)].append(token)
    rng = np.random.default_rng([config.seed, 1])
    n = min(len(v) for v in by_label.values())  # balance: subsample the majority class
    texts = [w for k in (0, 1) for w in rng.permutation(by_label[k])[:n].tolist()]
    labels = [k for k in (0, 1) for _ in range(n)]
    return _split("sentiment", ("negative", "positive"), texts, labels, config, str(path), rng)


def compare_task(config: RecipeConfig) -> TaskData:
    """Questions "is a larger than b?" over distinct integers 0–999, half yes, half no.

    Each unordered pair {a, b} is asked once, in one order, so a question and its mirror
    ("is b larger than a?") never sit on both sides of the split.
    """
    rng = np.random.default_rng([config.seed, 2])
    want = config.n_train_per_task + config.n_test_per_task
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < want:  # 499 500 unordered pairs of distinct integers exist
        a, b = sorted(int(x) for x in rng.choice(1000, size=2, replace=False))
        pairs.add((a, b))
    ordered = sorted(pairs)  # a set's order is not deterministic across runs; sort, then shuffle
    rng.shuffle(ordered)
    labels = rng.permutation(np.arange(want) % 2).tolist()  # 1 = "yes": exactly half, ±1
    texts = [
        f"is {hi if yes else lo} larger than {lo if yes else hi}?"
        for (lo, hi), yes in zip(ordered, labels, strict=True)
    ]
    source = f"generated: distinct integer pairs 0-999, numpy seed [{config.seed}, 2]"
    return _split("compare", ("no", "yes"), texts, labels, config, source, rng)


def iris_task(config: RecipeConfig) -> TaskData:
    """Iris species from the four measurements, verbalised (see the module docstring)."""
    path = package_file("sklearn", "datasets/data/iris.csv", what="the iris data set")
    with path.open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    species = tuple(rows[0][2:])  # header: n_rows, n_features, setosa, versicolor, virginica
    texts, labels = [], []
    for sl, sw, pl, pw, target in rows[1:]:
        text = f"sepal {sl} by {sw} cm, petal {pl} by {pw} cm"
        if text not in texts:  # iris repeats a few flowers; a repeat could land in both splits
            texts.append(text)
            labels.append(int(target))
    n_test = min(config.n_test_per_task, int(len(texts) * _IRIS_TEST_SHARE))
    n_train = min(config.n_train_per_task, len(texts) - n_test)
    rng = np.random.default_rng([config.seed, 3])
    return _split("iris", species, texts, labels, config, str(path), rng, n_train, n_test)


def _split(
    name: str,
    label_names: tuple[str, ...],
    texts: list[str],
    labels: list[int],
    config: RecipeConfig,
    source: str,
    rng: np.random.Generator,
    n_train: int | None = None,
    n_test: int | None = None,
) -> TaskData:
    """Stratified, seeded train/test split: each class keeps its share in both splits."""
    n_train = config.n_train_per_task if n_train is None else n_train
    n_test = config.n_test_per_task if n_test is None else n_test
    y = np.asarray(labels)
    total = min(len(texts), n_train + n_test)
    test_idx: list[int] = []
    train_idx: list[int] = []
    for k in range(len(label_names)):
        members = rng.permutation(np.flatnonzero(y == k))
        share = len(members) / len(y)
        k_test = round(n_test * share)
        k_train = round(min(n_train, total - n_test) * share)
        test_idx += members[:k_test].tolist()
        train_idx += members[k_test : k_test + k_train].tolist()
    test_idx = rng.permutation(test_idx).tolist()  # mix the classes
    train_idx = rng.permutation(train_idx).tolist()
    return TaskData(
        name=name,
        labels=label_names,
        train_texts=tuple(texts[i] for i in train_idx),
        train_labels=tuple(labels[i] for i in train_idx),
        test_texts=tuple(texts[i] for i in test_idx),
        test_labels=tuple(labels[i] for i in test_idx),
        source=source,
    )
