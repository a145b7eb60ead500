"""The catalog's full-text index, held in memory and scored as FTS5 scores it.

Matching ORs a letter's most informative words into one query over the
topics' title, keywords and summary, ranked by bm25. Asking SQLite costs a
query per letter (about 0.6 ms on the example catalog, most of it fixed
cost); this module reads the index once per change of the catalog
(``fts5vocab`` for every term instance, ``topics_fts_docsize`` for the row
lengths) and computes the same bm25 in Python, with the same formula, the
same order of additions and the same tie-breaking, so the scores are the
same floating-point numbers as ``bm25(topics_fts, ...)`` gives.

FTS5's bm25 (ext/fts5/fts5_aux.c), for a query of phrases p1..pn and a row
of D tokens in a table of N rows and T tokens:

    score = sum over i of idf_i * (f_i * (k1 + 1)) / (f_i + k1 * (1 - b + b * D / (T / N)))

where f_i adds each column's weight once per instance of phrase i in that
column, and idf_i = ln((N - hits_i + 0.5) / (hits_i + 0.5)), at least 1e-6.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import sqlite_utils

#: FTS5's bm25 constants.
K1 = 1.2
B = 0.75
#: The indexed columns of topics_fts, in the order bm25's weights are given.
COLUMNS = ("title", "keywords_text", "summary")


@dataclass
class WordIndex:
    """The terms of topics_fts with where they occur, and what bm25 needs of the table."""

    #: rows in the index (N) and their tokens (T)
    rows: int
    tokens: int
    #: rowid -> tokens in the row, all columns (D)
    sizes: dict[int, int]
    #: term -> {rowid: [occurrences per column]}, rowids ascending
    postings: dict[str, dict[int, list[int]]]
    #: term -> the rows holding it
    frequencies: dict[str, int]
    #: rowid -> the terms of each column, in order (for phrases of several words)
    texts: dict[int, tuple[tuple[str, ...], ...]]
    #: (phrase, column weights) -> what it adds per row, filled as letters ask
    _cache: dict = field(default_factory=dict)

    @classmethod
    def read(cls, db: sqlite_utils.Database) -> "WordIndex":
        """Read the index of ``topics_fts`` as it is now."""
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.topics_fts_instances "
                   "USING fts5vocab(main, topics_fts, instance)")
        column_number = {name: number for number, name in enumerate(COLUMNS)}
        postings: dict[str, dict[int, list[int]]] = {}
        placed: dict[int, list[dict[int, str]]] = {}
        for term, rowid, column, offset in db.execute(
            "SELECT term, doc, col, offset FROM temp.topics_fts_instances"
        ):
            number = column_number[column]
            counts = postings.setdefault(term, {}).setdefault(rowid, [0] * len(COLUMNS))
            counts[number] += 1
            placed.setdefault(rowid, [{} for _ in COLUMNS])[number][offset] = term
        postings = {term: dict(sorted(by_row.items())) for term, by_row in postings.items()}
        texts = {rowid: tuple(tuple(column[i] for i in sorted(column)) for column in columns)
                 for rowid, columns in placed.items()}
        sizes = {rowid: sum(_varints(blob)) for rowid, blob in
                 db.execute("SELECT id, sz FROM topics_fts_docsize")}
        # The averages record: the row count, then the tokens of each column.
        averages = db.execute("SELECT block FROM topics_fts_data WHERE id = 1").fetchone()
        counts = _varints(averages[0]) if averages and averages[0] else [0]
        return cls(
            rows=counts[0], tokens=sum(counts[1:]), sizes=sizes, postings=postings,
            frequencies={term: len(by_row) for term, by_row in postings.items()}, texts=texts,
        )

    def best(self, phrases: list[tuple[str, ...]], weights: tuple[float, ...],
             limit: int) -> list[tuple[int, float]]:
        """The ``limit`` rows matching any of ``phrases`` with the highest bm25, as (rowid, score).

        ``phrases`` are the query's phrases in order (a phrase given three
        times counts three times, as in an FTS5 query ORing it three times);
        ``weights`` are bm25's column weights. Best first; among equal
        scores the lower rowid first, as SQLite's ``ORDER BY ... LIMIT``
        keeps them (rows come out of the index in rowid order).
        """
        scores: dict[int, float] = {}
        for phrase in phrases:
            # Added phrase by phrase, as FTS5 does: the same sum in the same order.
            for rowid, term in self._terms(phrase, weights):
                scores[rowid] = scores.get(rowid, 0.0) + term
        return heapq.nsmallest(limit, scores.items(), key=lambda item: (-item[1], item[0]))

    def _terms(self, phrase: tuple[str, ...], weights: tuple[float, ...]) -> list[tuple[int, float]]:
        """[(rowid, what the phrase adds to the row's bm25)], rowids ascending; kept per phrase."""
        key = (phrase, weights)
        found = self._cache.get(key)
        if found is not None:
            return found
        if len(phrase) == 1:
            frequencies = []
            for rowid, counts in self.postings.get(phrase[0], {}).items():
                freq = 0.0
                for column, n in enumerate(counts):
                    for _ in range(n):  # one instance at a time, as FTS5 adds them
                        freq += weights[column]
                frequencies.append((rowid, freq))
        else:
            frequencies = []
            rarest = min(phrase, key=lambda term: self.frequencies.get(term, 0))
            for rowid in self.postings.get(rarest, {}):
                freq = 0.0
                for column, terms in enumerate(self.texts[rowid]):
                    for start in range(len(terms) - len(phrase) + 1):
                        if terms[start:start + len(phrase)] == phrase:
                            freq += weights[column]
                if freq:
                    frequencies.append((rowid, freq))
        hits = len(frequencies)
        idf = math.log((self.rows - hits + 0.5) / (hits + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        avgdl = self.tokens / self.rows
        found = []
        for rowid, freq in frequencies:
            D = float(self.sizes.get(rowid, 0))
            found.append((rowid, idf * ((freq * (K1 + 1.0)) / (freq + K1 * (1 - B + B * D / avgdl)))))
        self._cache[key] = found
        return found


def _varints(blob: bytes) -> list[int]:
    """The column sizes of a docsize record: SQLite varints, one per column."""
    values, value, i = [], 0, 0
    while i < len(blob):
        value, count = 0, 0
        while True:
            byte = blob[i]
            i += 1
            count += 1
            if count == 9:  # the ninth byte gives all 8 bits
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        values.append(value)
    return values
