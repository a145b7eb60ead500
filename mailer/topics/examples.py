"""Labelled letters: the columnist's own choices, and a vote of the nearest ones.

Two kinds of letter are labelled with a topic: the example letters a catalog
gives for a topic (``examples = ["..."]``), and every letter the columnist
answered with a link to a topic (``topic_examples``: the letter's message id
and the topic's slug, never the text, which stays in the archive and goes
when the correspondent is forgotten). A new letter asks its nearest labelled
letters which topics they were given; ``matching.py`` adds that vote to a
topic's score.
"""

from __future__ import annotations

import heapq
import json
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlite_utils

from mailer.clock import Clock, iso

#: How many of the nearest labelled letters vote.
NEIGHBOURS = 5
#: A labelled letter this dissimilar (cosine) does not vote.
MIN_SIMILARITY = 0.08

#: An address in a reply: scheme optional, up to the first space or bracket.
_LINK = re.compile(r"(?:https?://)?[\w.-]+\.[a-z]{2,}(?:/[^\s<>\"')\]]*)?", re.IGNORECASE)

#: A letter as the vote sees it: {feature: weight}.
Features = dict[str, float]


def record_linked_topics(
    db: sqlite_utils.Database, message_id: int, reply_text: str, *, clock: Clock
) -> list[str]:
    """Keep the topics whose addresses a reply links as labels of the letter it answers.

    ``message_id`` is the reader's letter (not the reply). Each topic of the
    catalog whose URL appears in ``reply_text`` (with or without http(s)://
    or a trailing slash) is recorded once. Returns the slugs, in order of
    appearance. Call it inside the reply's transaction.
    """
    by_address = {_address(url): slug
                  for slug, url in db.execute("SELECT slug, url FROM topics").fetchall()}
    linked: list[str] = []
    for found in _LINK.findall(reply_text or ""):
        slug = by_address.get(_address(found.rstrip(".,;:!?")))
        if slug and slug not in linked:
            linked.append(slug)
    now = iso(clock())
    for slug in linked:
        db.execute(
            "INSERT INTO topic_examples (message_id, slug, source, created_at) VALUES (?, ?, 'reply', ?) "
            "ON CONFLICT (message_id, slug) DO NOTHING",
            [message_id, slug, now],
        )
    return linked


def _address(url: str) -> str:
    """A URL as compared: no scheme, no fragment or query, no trailing slash, lower case."""
    text = re.sub(r"^https?://", "", url.strip(), flags=re.IGNORECASE)
    text = re.split(r"[#?]", text, maxsplit=1)[0]
    return text.rstrip("/").lower()


def examples_state(db: sqlite_utils.Database) -> tuple:
    """Something that changes whenever the labelled letters of the desk change."""
    return db.execute(
        "SELECT count(*), coalesce(max(rowid), 0), coalesce(sum(message_id), 0) FROM topic_examples"
    ).fetchone()


def labelled_letters(db: sqlite_utils.Database) -> list[tuple[str, str, str, frozenset[str]]]:
    """Every labelled letter: (key, subject, text, the slugs it was given).

    Catalog examples first (key ``catalog:SLUG:N``), then the letters the
    desk linked topics in (key ``message:ID``), only for topics that exist.
    """
    letters: list[tuple[str, str, str, frozenset[str]]] = []
    for slug, examples in db.execute("SELECT slug, examples FROM topics ORDER BY slug"):
        for number, text in enumerate(json.loads(examples or "[]"), start=1):
            letters.append((f"catalog:{slug}:{number}", "", text, frozenset([slug])))
    rows = db.execute(
        "SELECT e.message_id, m.subject, m.body_text, group_concat(e.slug, char(10)) "
        "FROM topic_examples e JOIN messages m ON m.id = e.message_id "
        "JOIN topics t ON t.slug = e.slug GROUP BY e.message_id ORDER BY e.message_id"
    ).fetchall()
    for message_id, subject, body, slugs in rows:
        letters.append((f"message:{message_id}", subject or "", body or "",
                        frozenset(slugs.split("\n"))))
    return letters


@dataclass
class NeighbourVote:
    """The labelled letters, as unit feature vectors, ready to vote on a new letter."""

    #: feature -> [(labelled letter number, weight)]: only letters sharing a
    #: feature with the new one are looked at.
    postings: dict[str, list[tuple[int, float]]]
    labels: list[frozenset[str]]
    idf: dict[str, float]

    @classmethod
    def build(cls, letters: Iterable[tuple[str, str, frozenset[str]]],
              features: Callable[[str, str], Features]) -> "NeighbourVote":
        """From (subject, text, slugs) of each labelled letter and a way to take features."""
        raw = [(features(subject, text), slugs) for subject, text, slugs in letters]
        df: dict[str, int] = {}
        for vector, _ in raw:
            for key in vector:
                df[key] = df.get(key, 0) + 1
        idf = {key: math.log(1 + len(raw) / count) for key, count in df.items()}
        postings: dict[str, list[tuple[int, float]]] = {}
        labels: list[frozenset[str]] = []
        for vector, slugs in raw:
            unit = _unit({k: v * idf[k] for k, v in vector.items()})
            if not unit:
                continue
            for key, weight in unit.items():
                postings.setdefault(key, []).append((len(labels), weight))
            labels.append(slugs)
        return cls(postings, labels, idf)

    def vote(self, letter: Features) -> dict[str, float]:
        """{slug: the neighbours' similarity summed per topic, over NEIGHBOURS} for a letter.

        Each of the NEIGHBOURS most similar labelled letters (cosine, at
        least MIN_SIMILARITY) votes for its topics with its similarity, so a
        vote is between 0 (no similar letter) and 1 (that many identical
        letters, all for one topic): weak likeness gives a weak vote.
        """
        if not self.labels or not letter:
            return {}
        # A feature no labelled letter has is as rare as can be (it weighs in
        # the letter's length, not in any likeness).
        rarest = math.log(1 + len(self.labels))
        idf = self.idf
        weighted = {k: v * idf.get(k, rarest) for k, v in letter.items()}
        # The letter as a unit vector (as _unit makes it), taken only where a
        # labelled letter shares the feature: the rest adds nothing.
        values = list(weighted.values())
        norm = math.sqrt(sum(map(operator.mul, values, values)))
        if not norm:
            return {}
        similarity = [0.0] * len(self.labels)
        postings = self.postings
        for key, value in weighted.items():
            found = postings.get(key)
            if found:
                weight = value / norm
                for number, other in found:
                    similarity[number] += weight * other
        nearest = heapq.nlargest(NEIGHBOURS, ((v, n) for n, v in enumerate(similarity) if v >= MIN_SIMILARITY))
        votes: dict[str, float] = {}
        for value, number in nearest:
            for slug in self.labels[number]:
                votes[slug] = votes.get(slug, 0.0) + value / NEIGHBOURS
        return votes


def _unit(vector: Features) -> Features:
    norm = math.sqrt(sum(v * v for v in vector.values()))
    return {k: v / norm for k, v in vector.items()} if norm else {}
