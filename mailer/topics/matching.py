"""Which published topics fit a letter.

Matching ranks topics against a letter with SQLite FTS5's bm25 over title,
keywords and summary (see docs/relevance.md for how it was tuned and how
well it does). When nothing fits, the acknowledgement links the column's
*starter* topics rather than whatever scored least badly.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
import unicodedata
import weakref
from dataclasses import dataclass
from importlib import resources

import sqlite_utils

from mailer.topics.stemmer import STOP_WORDS, WORD, _stem

#: letter gets the starters (calibrated on the bench, see docs/relevance.md).
MIN_SCORE = 1.5
#: A word in the subject counts this much more than one use in the body.
SUBJECT_WEIGHT = 2.0
#: The column's word for what a reader describes counts this much of the reader's word.
SYNONYM_WEIGHT = 1.0
#: bm25 column weights: title, keywords, summary.
COLUMN_WEIGHTS = (3.0, 4.0, 1.0)
#: A starter topic's score is multiplied by this before it competes as a match.
STARTER_WEIGHT = 0.6
#: At most this many distinct terms of a letter go into the query ...
MAX_QUERY_TERMS = 24
#: ... and a heavy term is repeated at most this often.
MAX_REPEAT = 3
#: At most this many topic rows (summed over the chosen terms) for bm25 to
#: score: that, not the size of the catalog, is what a match costs.
MAX_POSTINGS = 600
#: Only the first this-many characters of a letter are read.
MAX_LETTER_CHARS = 20_000
_STARTER_SLACK = 8
_BM25_K1 = 1.2  # FTS5's constant

@dataclass(frozen=True)
class TopicMatch:
    """A topic offered for a letter, with how well it fits (higher is better)."""

    slug: str
    title: str
    url: str
    summary: str
    score: float
    starter: bool



# --------------------------------------------------------------------------
# Matching letters to topics
#
# A letter is long and a topic is short, so the letter is turned into a
# weighted query: its words minus stop words (a subject word counting more
# than a body word), plus the column's words for what the reader describes
# (mailer/data/synonyms.toml). The most informative terms (weight x idf) go to
# FTS5, whose bm25 ranks topics on title, keywords and summary. A score is
# that bm25 in units of the most one rare word can earn, so "3.0" means about
# three distinctive words' worth of evidence, whatever the catalog's size.
# docs/relevance.md has the method, the figures and the limits.


def match_topics(
    db: sqlite_utils.Database,
    subject: str,
    text: str,
    *,
    limit: int = 3,
    min_score: float | None = None,
) -> list[TopicMatch]:
    """The topics that fit a letter, best first; only those scoring ``min_score`` or more.

    ``min_score`` defaults to MIN_SCORE; pass 0 to see every topic that
    shares a word with the letter. May be empty.
    """
    threshold = MIN_SCORE if min_score is None else min_score
    return [m for m in _ranked(db, subject, text, limit) if m.score >= threshold][:limit]


def topics_for_letter(
    db: sqlite_utils.Database, subject: str, text: str, *, limit: int = 3
) -> tuple[list[TopicMatch], bool]:
    """The topics to link in a letter's acknowledgement, and whether we fell back.

    Good matches come first; when there are fewer than ``limit`` of them the
    list is filled with the column's starter topics, oldest first (a starter
    keeps the score it got, 0.0 if it shared no word with the letter). The
    flag is True when no topic fitted at all, so the list is starters only
    (and empty if the column marked none).
    """
    if limit <= 0:
        return [], False
    ranked = _ranked(db, subject, text, limit)
    chosen = [m for m in ranked if m.score >= MIN_SCORE][:limit]
    fell_back = not chosen
    if len(chosen) < limit:
        scores = {m.slug: m.score for m in ranked}
        taken = {m.slug for m in chosen}
        for slug, title, url, summary in db.execute(
            "SELECT slug, title, url, summary FROM topics WHERE starter = 1 ORDER BY published, slug"
        ):
            if len(chosen) >= limit:
                break
            if slug not in taken:
                chosen.append(TopicMatch(slug, title, url, summary, scores.get(slug, 0.0), True))
    return chosen, fell_back


def _ranked(db: sqlite_utils.Database, subject: str, text: str, limit: int) -> list[TopicMatch]:
    """Topics sharing informative words with the letter, best first, with their scores."""
    total, frequencies = _vocabulary(db)
    query = _query(_letter_terms(subject, text), total, frequencies)
    if not query:
        return []
    rows = db.execute(
        "WITH hits AS (SELECT rowid, bm25(topics_fts, ?, ?, ?) AS rank FROM topics_fts "
        "WHERE topics_fts MATCH ? ORDER BY rank LIMIT ?) "
        "SELECT t.slug, t.title, t.url, t.summary, t.starter, hits.rank "
        "FROM hits JOIN topics t ON t.rowid = hits.rowid",
        [*COLUMN_WEIGHTS, query, limit + _STARTER_SLACK],
    ).fetchall()
    # The most bm25 gives one word found in a single topic: scores are in
    # units of that, so they read the same for a catalog of 20 or 5,000.
    unit = _idf(total, 1) * (_BM25_K1 + 1)
    matches = []
    for slug, title, url, summary, starter, rank in rows:
        score = -rank / unit
        if starter:
            # Starters are linked anyway when nothing fits; as a *match* they
            # must win on their own words, not on "start" and "change".
            score *= STARTER_WEIGHT
        matches.append(TopicMatch(slug, title, url, summary, round(score, 3), bool(starter)))
    matches.sort(key=lambda m: (-m.score, m.slug))
    return matches


def _query(terms, total: int, frequencies: dict[str, int]) -> str:
    """The FTS5 query for a letter's weighted terms.

    Terms the catalog does not contain are dropped; the rest are taken in
    order of weight x idf while they fit in MAX_QUERY_TERMS and MAX_POSTINGS
    (the number of topic rows bm25 has to score, which is what costs time).
    A term repeats as often as it weighs, because bm25 sums over phrases.
    """
    candidates = []
    for phrase, stems, weight in terms:
        # A phrase is in at most as many topics as its rarest word.
        df = min(frequencies.get(stem, 0) for stem in stems)
        if df:
            candidates.append((weight * _idf(total, df), phrase, weight, df))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    parts: list[str] = []
    postings = used = 0
    for _, phrase, weight, df in candidates:
        if used >= MAX_QUERY_TERMS:
            break
        if postings + df > MAX_POSTINGS:
            continue
        parts.extend([f'"{phrase}"'] * max(1, min(MAX_REPEAT, round(weight))))
        postings += df
        used += 1
    return " OR ".join(parts)


def _idf(total: int, df: int) -> float:
    # FTS5's own formula, floored the same way.
    idf = math.log((total - df + 0.5) / (df + 0.5))
    return idf if idf > 0 else 1e-6


_VOCABULARIES: "weakref.WeakKeyDictionary[sqlite_utils.Database, tuple]" = weakref.WeakKeyDictionary()


def _vocabulary(db: sqlite_utils.Database) -> tuple[int, dict[str, int]]:
    """How many topics there are, and in how many each stem appears.

    Read once from the index (fts5vocab) and kept per database handle until
    the index's structure record changes, which every committed write to it
    does; import_topics also drops it, for writes still inside a transaction.
    """
    marker = db.execute("SELECT block FROM topics_fts_data WHERE id = 10").fetchone()
    cached = _VOCABULARIES.get(db)
    if cached is not None and marker is not None and cached[0] == marker[0]:
        return cached[1], cached[2]
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.topics_fts_vocab "
        "USING fts5vocab(main, topics_fts, row)"
    )
    frequencies = dict(db.execute("SELECT term, doc FROM temp.topics_fts_vocab").fetchall())
    total = db.execute("SELECT count(*) FROM topics").fetchone()[0]
    # Reading the vocabulary flushes pending index writes, so read the marker after.
    marker = db.execute("SELECT block FROM topics_fts_data WHERE id = 10").fetchone()
    if marker is not None:
        _VOCABULARIES[db] = (marker[0], total, frequencies)
    return total, frequencies


def forget_vocabulary(db: sqlite_utils.Database) -> None:
    """Drop the cached vocabulary of ``db``: the catalog is about to change."""
    _VOCABULARIES.pop(db, None)


def letter_terms(subject: str, text: str) -> dict[str, float]:
    """The words and phrases of a letter worth matching on, with their weights.

    A word counts SUBJECT_WEIGHT if it is in the subject, plus 1 + ln(n) for n
    uses in the body; stop words, greetings, quoted replies and signatures are
    left out. Each reader's word or phrase in synonyms.toml adds the column's
    word for it, weighted the same way times SYNONYM_WEIGHT. Keys are words or
    space-separated phrases, heaviest first (ties in order of appearance).
    """
    terms = sorted(_letter_terms(subject, text), key=lambda term: -term[2])
    return {phrase: round(weight, 4) for phrase, _, weight in terms}


def _letter_terms(subject: str, text: str) -> list[tuple[str, tuple[str, ...], float]]:
    """(phrase, its stems, weight) for each term of a letter; see letter_terms."""
    synonyms = _synonyms()
    surface: dict[tuple[str, ...], str] = {}
    # Per term: [uses in the body, in the subject?] for the reader's own words
    # and, separately, for the column's words the synonyms file added.
    direct: dict[tuple[str, ...], list] = {}
    added: dict[tuple[str, ...], list] = {}
    for words, is_subject in ((_tokens(subject or ""), True),
                              (_tokens(_letter_body(text or "")), False)):
        stems = [_stem(word) for word in words]
        for index, word in enumerate(words):
            stem = stems[index]
            if len(word) > 1 and word not in STOP_WORDS and not word.isdigit():
                key = (stem,)
                surface.setdefault(key, word)
                _count(direct, key, is_subject)
            for reader, targets in synonyms.get(stem, ()):
                if len(reader) == 1 or tuple(stems[index:index + len(reader)]) == reader:
                    for phrase, key in targets:
                        surface.setdefault(key, phrase)
                        _count(added, key, is_subject)
    terms = []
    for key, phrase in surface.items():
        weight = _weight(direct.get(key)) + SYNONYM_WEIGHT * _weight(added.get(key))
        terms.append((phrase, key, weight))
    return terms


def _count(tally: dict, key: tuple[str, ...], is_subject: bool) -> None:
    entry = tally.setdefault(key, [0, False])
    if is_subject:
        entry[1] = True
    else:
        entry[0] += 1


def _weight(entry) -> float:
    if entry is None:
        return 0.0
    return _damped(entry[0]) + (SUBJECT_WEIGHT if entry[1] else 0.0)


def _damped(count: float) -> float:
    """Saying a word five times makes it matter more, not five times more."""
    return 0.0 if count <= 0 else 1.0 + math.log(count)


def _tokens(text: str) -> list[str]:
    """Words as FTS5's unicode61 tokenizer sees them: case and diacritics folded."""
    text = text[:MAX_LETTER_CHARS]
    if not text.isascii():
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return WORD.findall(text.lower())


_QUOTE_HEADER = re.compile(r"^\s*(on\b.{0,200}\bwrote:|-+\s*original message\s*-+)\s*$", re.I)
_GREETING = re.compile(r"^\s*(dear|hi|hello|hey)\b.{0,40}$", re.I)


def _letter_body(text: str) -> str:
    """The reader's own words: no greeting, quoted reply or signature block.

    A reply to our acknowledgement quotes the topics we linked; reading the
    quote would only match them again.
    """
    kept: list[str] = []
    for line in text[:MAX_LETTER_CHARS].splitlines():
        if line.rstrip() == "--" or _QUOTE_HEADER.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        if not any(k.strip() for k in kept) and _GREETING.match(line):
            continue
        kept.append(line)
    return "\n".join(kept)


# The synonyms file: [synonyms] maps a word or phrase the column uses (as in
# its titles and keywords) to the words and phrases readers use for it.
SynonymTable = dict[str, tuple[tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]], ...]]


@functools.lru_cache(maxsize=1)
def _synonyms() -> SynonymTable:
    """mailer/data/synonyms.toml, read once, as a lookup by the first stem of a reader's phrase."""
    text = resources.files("mailer").joinpath("data/synonyms.toml").read_text(encoding="utf-8")
    return parse_synonyms(tomllib.loads(text))


def parse_synonyms(data: dict) -> SynonymTable:
    """Index ``{column phrase: [reader phrases]}`` by the first stem of each reader phrase."""
    table: dict[str, dict[tuple[str, ...], list]] = {}
    for column_phrase, reader_phrases in (data.get("synonyms") or {}).items():
        words = _tokens(column_phrase)
        if not words or not isinstance(reader_phrases, list):
            raise ValueError(f"synonyms: {column_phrase!r} must map to a list of words")
        target = (" ".join(words), tuple(_stem(word) for word in words))
        for reader_phrase in reader_phrases:
            stems = tuple(_stem(word) for word in _tokens(str(reader_phrase)))
            if not stems or stems == target[1]:
                continue
            targets = table.setdefault(stems[0], {}).setdefault(stems, [])
            if target not in targets:
                targets.append(target)
    return {
        first: tuple((reader, tuple(targets)) for reader, targets in by_phrase.items())
        for first, by_phrase in table.items()
    }
