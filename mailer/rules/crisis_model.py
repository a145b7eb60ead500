"""A small word model of crisis letters, beside the warning signs and patterns.

The sign vocabulary and the curated patterns know phrases; a reader who names
a means, a preparation or a goodbye in other words is missed by both. This
model scores a letter from its words (folded as the vocabulary folds them),
its word pairs, and the sign categories found, with a weight per feature
learnt by L2-regularised logistic regression on the labelled development
letters. It is small on purpose (a few thousand weights, plain Python, no
dependency) so it is cheap, readable, and cannot memorise much.

The weights live in ``mailer/data/crisis_model.toml``, written by
``python bench/crisis.py --train`` from the development letters only (never
the blind set, never dev2's held-out part); the file records what it was
trained on and the threshold chosen there. :mod:`mailer.rules.crisis` uses the
score only to *add* letters the rules miss: it never clears a strong sign.
"""

from __future__ import annotations

import functools
import json
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from mailer.rules.signs import tokens_of

__all__ = ["WordModel", "features_of", "train", "load_model", "MODEL_PATH"]

MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "crisis_model.toml"


def features_of(prepared: str, signs: Iterable[str] = (), *, tokens: list[str] | None = None) -> set[str]:
    """The features of an already-normalised letter: folded words, adjacent word pairs, sign categories.

    ``tokens``: the letter's :func:`~mailer.rules.signs.tokens_of`, when the caller has them already.
    """
    words = tokens_of(prepared) if tokens is None else tokens
    found = set(words)
    found.update(map(" ".join, zip(words, words[1:])))  # "a b", as f"{a} {b}" would, without a Python loop
    found.update(f"sign:{sign}" for sign in signs)
    return found


def _scale(count: int) -> float:
    """Each feature's value in a letter with ``count`` features: the letter's vector has unit length.

    Without it a long letter adds up many small weights and scores high
    whatever it says; with it a long letter's words weigh less each.
    """
    return 1.0 / math.sqrt(max(count, 1))


@dataclass(frozen=True)
class WordModel:
    """Feature weights, a bias, and the threshold above which a letter counts as a crisis."""

    weights: dict[str, float]
    bias: float
    threshold: float
    trained_on: str = ""

    def probability(self, features: Iterable[str]) -> float:
        """The model's probability that a letter with these features is a crisis."""
        features = list(features)
        return self._probability(self._evidence(features), len(features))

    def _evidence(self, features: list[str]) -> float:
        """The sum of the features' weights (0 for a feature the model does not know), in their order."""
        return sum(map(self.weights.get, features, repeat(0.0)))

    def _probability(self, evidence: float, count: int) -> float:
        """The probability for a letter of ``count`` features whose weights sum to ``evidence``."""
        z = self.bias + _scale(count) * evidence
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def flags(self, features: Iterable[str]) -> bool:
        """Whether the model calls a letter with these features a crisis.

        Above the threshold, and only when the letter's own words lean towards
        crisis (their weights sum above zero): the threshold sits below the
        base rate, and a letter of words the model has never seen (or none at
        all) must not be flagged by the bias alone.
        """
        features = list(features)
        evidence = self._evidence(features)
        return evidence > 0 and self._probability(evidence, len(features)) > self.threshold

    def to_toml(self) -> str:
        """The model as TOML, weights rounded and sorted so the file diffs well.

        A JSON string is a valid TOML basic string, so keys and text are
        written with :func:`json.dumps`; the standard library reads TOML but
        does not write it.
        """
        lines = [
            "# The crisis word model: written by `python bench/crisis.py --train`, never by hand.",
            f"trained_on = {json.dumps(self.trained_on)}",
            f"threshold = {round(self.threshold, 4)}",
            f"bias = {round(self.bias, 4)}",
            "",
            "[weights]",
        ]
        lines += [f"{json.dumps(k)} = {round(v, 4)}" for k, v in sorted(self.weights.items()) if abs(v) >= 1e-3]
        return "\n".join(lines) + "\n"


def train(
    examples: list[tuple[set[str], bool]],
    *,
    l2: float = 0.03,
    epochs: int = 60,
    rate: float = 0.2,
    crisis_weight: float = 1.0,
    min_count: int = 2,
) -> WordModel:
    """Fit weights by stochastic gradient descent on (features, is_crisis) pairs.

    A crisis example weighs ``crisis_weight`` times a calm one, because a miss
    is worse than a false alarm. Features seen in fewer than ``min_count``
    letters are dropped: one letter's odd word is not evidence.
    """
    counts: dict[str, int] = {}
    for features, _label in examples:
        for f in features:
            counts[f] = counts.get(f, 0) + 1
    kept = {f for f, n in counts.items() if n >= min_count}
    data = [([f for f in features if f in kept], label) for features, label in examples]
    weights: dict[str, float] = dict.fromkeys(kept, 0.0)
    bias = 0.0
    order = list(range(len(data)))
    for epoch in range(epochs):
        step = rate / (1 + epoch * 0.1)
        # A fixed, deterministic shuffle per epoch: the same letters give the same weights.
        order.sort(key=lambda i: (i * 7919 + epoch * 104729) % 1000003)
        for i in order:
            features, label = data[i]
            value = _scale(len(examples[i][0]))
            z = bias + value * sum(weights[f] for f in features)
            p = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
            gradient = (p - float(label)) * (crisis_weight if label else 1.0)
            bias -= step * gradient
            for f in features:
                weights[f] -= step * (gradient * value + l2 * weights[f])
    return WordModel(weights=weights, bias=bias, threshold=0.5)


@functools.cache
def load_model(path: Path = MODEL_PATH) -> WordModel | None:
    """The shipped model, read once per process; None when there is no model file."""
    if not path.exists():
        return None
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return WordModel(
        weights={str(k): float(v) for k, v in data["weights"].items()},
        bias=float(data["bias"]),
        threshold=float(data["threshold"]),
        trained_on=str(data.get("trained_on", "")),
    )
