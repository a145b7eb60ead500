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
from array import array
from collections import Counter
from dataclasses import dataclass, field

import sqlite_utils

#: FTS5's bm25 constants.
K1 = 1.2
B = 0.75
#: The indexed columns of topics_fts, in the order bm25's weights are given.
COLUMNS = ("title", "keywords_text", "summary")


@dataclass
class WordIndex:
    """The terms of topics_fts with the rows holding them, and what bm25 needs of the table."""

    #: rows in the index (N) and their tokens (T), from its averages record
    rows: int
    tokens: int
    #: rowid -> k1 * (1 - b + b * D / avgdl), the part of bm25 that depends on the row's length D
    lengths: dict[int, float]
    #: term -> (the rowids holding it, ascending; its instances in each column of
    #: each of those rows, one row after the other)
    postings: dict[str, tuple[tuple[int, ...], array]]
    #: term -> how many rows hold it
    frequencies: dict[str, int]
    #: rowid -> the terms of each indexed column, in order (for phrases of several words)
    texts: dict[int, tuple[tuple[str, ...], ...]]
    #: (phrase, column weights) -> (rowids, what the phrase adds to each row's bm25),
    #: filled as letters ask
    _cache: dict = field(default_factory=dict)

    @classmethod
    def read(cls, db: sqlite_utils.Database) -> "WordIndex":
        """Read the index of ``topics_fts`` as it is now."""
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.topics_fts_instances "
                   "USING fts5vocab(main, topics_fts, instance)")
        # Each column of each row as the list of its terms, sized from docsize,
        # so that every instance goes straight to its place.
        column_sizes = {rowid: _varints(blob) for rowid, blob in
                        db.execute("SELECT id, sz FROM topics_fts_docsize")}
        placed: dict[int, list[list]] = {
            rowid: [[None] * size for size in sizes[:len(COLUMNS)]] for rowid, sizes in column_sizes.items()}
        column_number = {name: number for number, name in enumerate(COLUMNS)}
        terms: dict[str, str] = {}  # one object per term, shared by every row that holds it
        for term, rowid, column, offset in db.execute(
            "SELECT term, doc, col, offset FROM temp.topics_fts_instances"
        ):
            columns = placed.get(rowid)
            if columns is None:
                columns = placed[rowid] = [[] for _ in COLUMNS]
            place = columns[column_number[column]]
            if offset >= len(place):
                place.extend([None] * (offset + 1 - len(place)))
            place[offset] = terms.setdefault(term, term)
        texts: dict[int, tuple[tuple[str, ...], ...]] = {}
        rows_of: dict[str, list[int]] = {}
        counts_of: dict[str, array] = {}
        for rowid in sorted(placed):
            texts[rowid] = columns = tuple(tuple(column) for column in placed[rowid])
            for number, column in enumerate(columns):
                for term, n in Counter(column).items():
                    if term is None:  # a place the index holds no term for
                        continue
                    rows = rows_of.setdefault(term, [])
                    counts = counts_of.get(term)
                    if counts is None:
                        counts = counts_of[term] = array("I")
                    if not rows or rows[-1] != rowid:
                        rows.append(rowid)
                        counts.extend([0] * len(COLUMNS))
                    counts[len(counts) - len(COLUMNS) + number] = n
        sizes = {rowid: sum(sizes) for rowid, sizes in column_sizes.items()}
        # The averages record: the row count, then the tokens of each column.
        averages = db.execute("SELECT block FROM topics_fts_data WHERE id = 1").fetchone()
        totals = _varints(averages[0]) if averages and averages[0] else [0]
        rows, tokens = totals[0], sum(totals[1:])
        avgdl = tokens / rows if rows else 1.0
        return cls(
            rows=rows, tokens=tokens,
            lengths={rowid: K1 * (1 - B + B * float(sizes.get(rowid, 0)) / avgdl)
                     for rowid in sizes.keys() | placed.keys()},
            postings={term: (tuple(rows), counts_of[term]) for term, rows in rows_of.items()},
            frequencies={term: len(rows) for term, rows in rows_of.items()}, texts=texts,
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
            rowids, terms = self._terms(phrase, weights)
            for rowid, term in zip(rowids, terms):
                scores[rowid] = scores.get(rowid, 0.0) + term
        return heapq.nsmallest(limit, scores.items(), key=lambda item: (-item[1], item[0]))

    def _terms(self, phrase: tuple[str, ...], weights: tuple[float, ...]) -> tuple[tuple[int, ...], array]:
        """(rowids ascending, what the phrase adds to each one's bm25), kept per phrase."""
        key = (phrase, weights)
        found = self._cache.get(key)
        if found is not None:
            return found
        if len(phrase) == 1:
            rowids, counts = self.postings.get(phrase[0], ((), ()))
            per_row = [iter(counts)] * len(COLUMNS)  # the counts of one row at a time
            if all(float(w).is_integer() for w in weights):
                # FTS5 adds a column's weight once per instance; with whole
                # weights every partial sum is a whole number, exact in a
                # double, so count x weight is the same number.
                w0, w1, w2 = weights
                freqs = [c0 * w0 + c1 * w1 + c2 * w2 for c0, c1, c2 in zip(*per_row)]
            else:
                freqs = [_added(weights, instances) for instances in zip(*per_row)]
        else:
            rowids, freqs = [], []
            rarest = min(phrase, key=lambda term: self.frequencies.get(term, 0))
            size = len(phrase)
            for rowid in self.postings.get(rarest, ((), ()))[0]:
                instances = [sum(terms[start:start + size] == phrase for start in range(len(terms) - size + 1))
                             for terms in self.texts[rowid]]
                if any(instances):
                    rowids.append(rowid)
                    freqs.append(_added(weights, instances))
        hits = len(freqs)
        idf = math.log((self.rows - hits + 0.5) / (hits + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        lengths = self.lengths
        k1_plus_1 = K1 + 1.0
        added = array("d", [idf * ((freq * k1_plus_1) / (freq + lengths[rowid]))
                            for rowid, freq in zip(rowids, freqs)])
        found = self._cache[key] = (tuple(rowids), added)
        return found


def _added(weights: tuple[float, ...], instances) -> float:
    """f in bm25: each column's weight added once per instance, in FTS5's order."""
    freq = 0.0
    for weight, n in zip(weights, instances):
        for _ in range(n):
            freq += weight
    return freq


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
