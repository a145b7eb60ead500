"""Which published topics fit a letter.

A topic's score for a letter adds three kinds of evidence (docs/relevance.md
has the method, the figures and the limits):

* **words**: SQLite FTS5's bm25 over the topic's title, keywords and summary,
  for the letter's most informative words;
* **themes**: the phrases of each theme (``themes.py``) found in the letter,
  times the share of that theme in the topic's profile;
* **labelled letters**: the vote of the nearest letters the columnist linked
  topics for, and of the catalog's example letters (``examples.py``).

Topics scoring at least RELATIVE_FIT of the best one are linked; when the
best scores below MIN_SCORE nothing fits, and the acknowledgement links the
column's *starter* topics rather than whatever scored least badly.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import json
import math
import re
import tomllib
import unicodedata
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple
from importlib import resources

import sqlite_utils

from mailer.topics import examples as labelled
from mailer.topics.stemmer import STOP_WORDS, WORD, _stem
from mailer.topics.themes import theme_evidence, topic_profile
from mailer.topics.wordindex import WordIndex

#: Below this score nothing fits a letter, and it gets the starters
#: (calibrated on the development letters, see docs/relevance.md).
MIN_SCORE = 2.4
#: A topic is linked when it scores at least this share of the best topic.
RELATIVE_FIT = 0.2
#: How much a letter's theme evidence counts against one rare word's bm25.
#: Evidence is damped, THEME_WEIGHT x ln(1 + evidence), so a letter that
#: names a theme ten times is not ten times as much about it.
THEME_WEIGHT = 2.0
#: A theme many topics share tells them apart less than one topic's own
#: theme: its evidence counts (idf / the idf of the catalog's narrowest
#: theme) to this power, with idf = ln(1 + topics / topics under the theme).
THEME_IDF_POWER = 0.5
#: How much a unanimous vote of the nearest labelled letters counts.
EXAMPLE_WEIGHT = 4.0
#: The themes of a letter in crisis: urgent letters get topics on these
#: rather than the starters.
URGENT_THEMES = ("distress", "low-mood", "loneliness", "grief")
#: Theme evidence in the letter's questions ("How do I say no to her?")
#: counts this much again: the question names what the reader wants help with.
QUESTION_WEIGHT = 2.0
#: A word in the subject counts this much more than one use in the body.
SUBJECT_WEIGHT = 2.0
#: The column's word for what a reader describes counts this much of the reader's word.
SYNONYM_WEIGHT = 1.0
#: bm25 column weights: title, keywords, summary.
COLUMN_WEIGHTS = (3.0, 4.0, 1.0)
#: A starter topic's score is multiplied by this before it competes as a match.
STARTER_WEIGHT = 0.8
#: At most this many distinct terms of a letter go into the query ...
MAX_QUERY_TERMS = 24
#: ... and a heavy term is repeated at most this often.
MAX_REPEAT = 3
#: At most this many topic rows (summed over the chosen terms) for bm25 to
#: score: that, not the size of the catalog, is what a match costs.
MAX_POSTINGS = 600
#: Only the first this-many characters of a letter are read.
MAX_LETTER_CHARS = 20_000
#: Only the first this-many characters of a topic's body give it themes.
MAX_BODY_CHARS = 4_000
#: How many topics each kind of evidence proposes as candidates.
CANDIDATES = 40
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


def match_topics(
    db: sqlite_utils.Database,
    subject: str,
    text: str,
    *,
    limit: int = 3,
    min_score: float | None = None,
) -> list[TopicMatch]:
    """The topics that fit a letter, best first; only those scoring ``min_score`` or more.

    ``min_score`` defaults to MIN_SCORE; pass 0 to see every topic with any
    evidence (words, themes or labelled letters), ranked. May be empty.
    """
    threshold = MIN_SCORE if min_score is None else min_score
    return [TopicMatch(*m) for m in _ranked(db, subject, text, keep=max(limit, CANDIDATES))
            if m.score >= threshold][:limit]


def topics_for_letter(
    db: sqlite_utils.Database, subject: str, text: str, *, limit: int = 3, urgent: bool = False
) -> tuple[list[TopicMatch], bool]:
    """The topics to link in a letter's acknowledgement, and whether we fell back.

    Every topic that fits is linked, best first, up to ``limit``: something
    fits when the best topic scores at least MIN_SCORE, and then every topic
    scoring at least RELATIVE_FIT of the best one fits too. When nothing fits, the letter gets the column's starter
    topics, oldest first (each keeps the score it got, 0.0 if none), and the
    flag is True (the list is empty if the column marked no starters).

    ``urgent`` is for a letter flagged as a reader in crisis: no starter is
    linked while the catalog has topics on URGENT_THEMES (distress, low
    mood, loneliness, grief); those fill the places the fitting topics leave
    free, best for this letter first.
    """
    if limit <= 0:
        return [], False
    ranked = _ranked(db, subject, text)
    best = ranked[0].score if ranked else 0.0
    # The floor says whether anything fits; the others fit relative to the best.
    chosen = ([TopicMatch(*m) for m in ranked if m.score >= RELATIVE_FIT * best][:limit]
              if best >= MIN_SCORE else [])
    fell_back = not chosen
    if urgent:
        # A reader in crisis gets the column's pieces on how they feel, not
        # its welcome pieces, even where a starter matched.
        chosen = [m for m in chosen if not m.starter]
        chosen += _urgent_topics(db, ranked, {m.slug for m in chosen}, limit - len(chosen))
    if fell_back and len(chosen) < limit:
        scores = {m.slug: m.score for m in ranked}
        taken = {m.slug for m in chosen}
        for slug, title, url, summary in db.execute(
            "SELECT slug, title, url, summary FROM topics WHERE starter = 1 ORDER BY published, slug"
        ):
            if len(chosen) >= limit:
                break
            if slug not in taken:
                chosen.append(TopicMatch(slug, title, url, summary, scores.get(slug, 0.0), True))
    return chosen, fell_back and not any(not m.starter for m in chosen)


def _urgent_topics(db: sqlite_utils.Database, ranked: list["_Ranked"], taken: set[str],
                   limit: int) -> list[TopicMatch]:
    """The first ``limit`` of the catalog's topics on URGENT_THEMES not yet taken, best for this letter first."""
    model = _catalog(db)
    scores = {m.slug: m.score for m in ranked}
    weight: dict[str, float] = {}
    for theme_id in URGENT_THEMES:
        for slug, share in model.by_theme.get(theme_id, ()):
            if not model.topics[slug][3]:  # starters are the fallback anyway
                weight[slug] = max(weight.get(slug, 0.0), share)
    order = sorted((s for s in weight if s not in taken),
                   key=lambda s: (-scores.get(s, 0.0), -weight[s], s))
    found = []
    for slug in order[:max(limit, 0)]:
        title, url, summary, starter = model.topics[slug][:4]
        found.append(TopicMatch(slug, title, url, summary, scores.get(slug, 0.0), bool(starter)))
    return found


class _Ranked(NamedTuple):
    """A topic's fields and score as _ranked gives them (a TopicMatch costs more to make)."""

    slug: str
    title: str
    url: str
    summary: str
    score: float
    starter: bool


def _ranked(db: sqlite_utils.Database, subject: str, text: str, keep: int = CANDIDATES) -> list[_Ranked]:
    """The ``keep`` topics with the most evidence for the letter, best first, with their scores.

    score = bm25 words + THEME_WEIGHT x sum over themes of (ln(1 + the
    letter's evidence, its questions' counted QUESTION_WEIGHT more) x the
    theme's share in the topic x the theme's idf factor) + EXAMPLE_WEIGHT x
    the neighbours' vote; a starter's score is then multiplied by
    STARTER_WEIGHT. Topics with no evidence at all are left out.
    """
    model = _catalog(db)
    if not model.topics:
        return []
    body = _letter_body(text or "")
    words = _letter_words(subject, text, body)
    subject_stems, body_stems = words[0][1], words[1][1]
    scores = _word_scores(model, _letter_terms(subject, text, words))
    evidence = letter_themes(subject_stems, body_stems)
    asked = dict(evidence)
    for theme_id, value in theme_evidence(_question_stems(text, body)).items():
        asked[theme_id] = asked.get(theme_id, 0.0) + QUESTION_WEIGHT * value
    for theme_id, value in asked.items():
        damped = THEME_WEIGHT * math.log(1.0 + value) * model.theme_idf.get(theme_id, 1.0)
        for slug, share in model.by_theme.get(theme_id, ())[:CANDIDATES]:
            scores[slug] = scores.get(slug, 0.0) + damped * share
    votes = model.vote(db).vote(_features(subject_stems + body_stems, evidence))
    for slug, vote in votes.items():
        scores[slug] = scores.get(slug, 0.0) + EXAMPLE_WEIGHT * vote
    for slug in model.starters:
        if slug in scores:
            # Starters are linked anyway when nothing fits; as a *match* they
            # must win on their own evidence, not on "start" and "change".
            scores[slug] *= STARTER_WEIGHT
    best = heapq.nsmallest(keep, (slug for slug, score in scores.items() if score > 0),
                           key=lambda slug: (-scores[slug], slug))
    matches = []
    for slug in best:
        if slug not in model.topics:  # imported since the catalog was read
            continue
        title, url, summary, starter = model.topics[slug][:4]
        matches.append(_Ranked(slug, title, url, summary, round(scores[slug], 3), starter))
    return matches


def _word_scores(model: "_Catalog", terms) -> dict[str, float]:
    """{slug: bm25 in units of one rare word} for the topics sharing informative words.

    The bm25 of FTS5 over title, keywords and summary (COLUMN_WEIGHTS), for
    the query _query chooses, computed on the catalog's index held in
    memory (``wordindex.py``): the same scores and the same CANDIDATES best
    topics as ``bm25(topics_fts, ...)`` in SQL, without a query per letter.
    """
    total = len(model.topics)
    phrases = _query(terms, total, model.words.frequencies)
    if not phrases:
        return {}
    # The most bm25 gives one word found in a single topic: scores are in
    # units of that, so they read the same for a catalog of 20 or 5,000.
    unit = _idf(total, 1) * (_BM25_K1 + 1)
    scores = {}
    for rowid, score in model.words.best(phrases, COLUMN_WEIGHTS, CANDIDATES):
        slug = model.slugs.get(rowid)
        if slug is not None:  # as the join with topics would drop it
            rank = -1.0 * score  # what bm25() returns
            scores[slug] = -rank / unit
    return scores


def letter_stems(subject: str, text: str) -> tuple[list[str], list[str]]:
    """Every word of the subject and of the reader's own words in the body, stemmed."""
    (_, subject_stems), (_, body_stems) = _letter_words(subject, text)
    return subject_stems, body_stems


def _letter_words(subject: str, text: str, body: str | None = None) -> tuple[tuple[list[str], list[str]], ...]:
    """((words, stems) of the subject, (words, stems) of the reader's own words in the body).

    ``body`` is _letter_body(text), if already taken.
    """
    taken = []
    for words in (_tokens(subject or ""), _tokens(_letter_body(text or "") if body is None else body)):
        taken.append((words, list(map(_stem, words))))
    return tuple(taken)


# A sentence ending in "?": it starts after the previous sentence's end (or
# at the start), so a sentence that is not a question is read once, not
# retried from each of its characters.
_QUESTION = re.compile(r"(?<![^.?!\n])[^.?!\n]*\?")


def _question_stems(text: str, body: str | None = None) -> list[str]:
    """The stems of the sentences in the reader's own words that end in a question mark.

    ``body`` is _letter_body(text), if already taken.
    """
    body = _letter_body(text or "") if body is None else body
    if "?" not in body:
        return []
    return [_stem(w) for question in _QUESTION.findall(body) for w in _tokens(question)]


def letter_themes(subject_stems: list[str], body_stems: list[str]) -> dict[str, float]:
    """The theme evidence of a letter: the body's, plus the subject's counted SUBJECT_WEIGHT times."""
    evidence = theme_evidence(body_stems)
    for theme_id, value in theme_evidence(subject_stems).items():
        evidence[theme_id] = evidence.get(theme_id, 0.0) + SUBJECT_WEIGHT * value
    return evidence


def _features(stems: list[str], evidence: dict[str, float]) -> dict[str, float]:
    """A letter for the neighbours' vote: its content stems (damped counts) and its themes."""
    # 1 + ln n is _damped(n) for the n >= 1 a Counter holds.
    features = {stem: 1.0 + math.log(n) for stem, n in Counter(stems).items()
                if len(stem) > 2 and stem not in STOP_WORDS and not stem.isdigit()}
    for theme_id, value in evidence.items():
        features["theme:" + theme_id] = 2.0 * math.log(1.0 + value)
    return features


def _letter_features(subject: str, text: str) -> dict[str, float]:
    subject_stems, body_stems = letter_stems(subject, text)
    return _features(subject_stems + body_stems, letter_themes(subject_stems, body_stems))


@dataclass
class _Catalog:
    """What matching needs of the catalog, read once per change of the topics."""

    #: slug -> (title, url, summary, starter, profile)
    topics: dict[str, tuple]
    #: theme id -> [(slug, share)], the topics most about the theme first
    by_theme: dict[str, list[tuple[str, float]]]
    #: the slugs of the starter topics
    starters: frozenset[str] = frozenset()
    #: theme id -> how much its evidence counts for being shared by few topics (THEME_IDF_POWER)
    theme_idf: dict[str, float] = dataclasses.field(default_factory=dict)
    #: the index of title, keywords and summary, for bm25
    words: WordIndex | None = None
    #: rowid -> slug
    slugs: dict[int, str] = dataclasses.field(default_factory=dict)
    _vote: tuple | None = None

    def vote(self, db: sqlite_utils.Database) -> labelled.NeighbourVote:
        """The labelled letters' vote, rebuilt when the desk's labelled letters change."""
        state = labelled.examples_state(db)
        if self._vote is None or self._vote[0] != state:
            letters = [(subject, text, slugs)
                       for _, subject, text, slugs in labelled.labelled_letters(db)]
            self._vote = (state, labelled.NeighbourVote.build(letters, _letter_features))
        return self._vote[1]


_CATALOGS: "weakref.WeakKeyDictionary[sqlite_utils.Database, tuple]" = weakref.WeakKeyDictionary()


def _catalog(db: sqlite_utils.Database) -> _Catalog:
    """The topics with their theme profiles, kept per handle until the index changes."""
    marker = db.execute("SELECT block FROM topics_fts_data WHERE id = 10").fetchone()
    cached = _CATALOGS.get(db)
    if cached is not None and marker is not None and cached[0] == marker[0]:
        return cached[1]
    topics: dict[str, tuple] = {}
    by_theme: dict[str, list[tuple[str, float]]] = {}
    slugs: dict[int, str] = {}
    for rowid, slug, title, url, summary, keywords, starter, body, chosen in db.execute(
        "SELECT rowid, slug, title, url, summary, keywords, starter, body, themes FROM topics"
    ):
        slugs[rowid] = slug
        fields = {
            "title": [_stem(w) for w in _tokens(title)],
            "keywords": [_stem(w) for w in _tokens(" , ".join(json.loads(keywords or "[]")))],
            "summary": [_stem(w) for w in _tokens(summary)],
            "body": [_stem(w) for w in _tokens((body or "")[:MAX_BODY_CHARS])],
        }
        profile = topic_profile(fields, tuple(json.loads(chosen or "[]")))
        if profile:
            # Unit length, so a topic filed under two themes does not earn
            # twice what a topic wholly about one of them earns.
            norm = math.sqrt(sum(share ** 2 for share, _ in profile.values()))
            profile = {t: (share / norm, strength) for t, (share, strength) in profile.items()}
        topics[slug] = (title, url, summary, bool(starter), {t: v[0] for t, v in profile.items()})
        for theme_id, (share, strength) in profile.items():
            by_theme.setdefault(theme_id, []).append((slug, share, strength))
    for entries in by_theme.values():
        # The topics most about a theme first: a letter's theme evidence goes
        # to the first CANDIDATES of them, which bounds the work per letter.
        entries.sort(key=lambda e: (-e[1], -e[2], e[0]))
    by_theme = {t: [(slug, share) for slug, share, _ in entries] for t, entries in by_theme.items()}
    idf = {t: math.log(1.0 + len(topics) / len(entries)) for t, entries in by_theme.items()}
    # Relative to the catalog's narrowest theme, so that on a big catalog,
    # where every theme has many topics, themes keep their weight against words.
    rarest = max(idf.values(), default=1.0)
    theme_idf = {t: (value / rarest) ** THEME_IDF_POWER for t, value in idf.items()}
    words = WordIndex.read(db)
    model = _Catalog(topics, by_theme, frozenset(s for s, info in topics.items() if info[3]), theme_idf,
                     words=words, slugs=slugs)
    # Reading the index flushes pending writes to it, so read the marker after.
    marker = db.execute("SELECT block FROM topics_fts_data WHERE id = 10").fetchone()
    if marker is not None:
        _CATALOGS[db] = (marker[0], model)
    return model


def topic_themes(db: sqlite_utils.Database) -> dict[str, dict[str, float]]:
    """{slug: {theme: share}}: each topic's themes, as matching sees them."""
    return {slug: dict(info[4]) for slug, info in _catalog(db).topics.items()}


def _query(terms, total: int, frequencies: dict[str, int]) -> list[tuple[str, ...]]:
    """The phrases (as stems) of the query for a letter's weighted terms, in order.

    Terms the catalog does not contain are dropped; the rest are taken in
    order of weight x idf while they fit in MAX_QUERY_TERMS and MAX_POSTINGS
    (the number of topic rows bm25 has to score, which is what costs time).
    A term repeats as often as it weighs, because bm25 sums over phrases.
    """
    idf_of = _idfs(total)
    candidates = []
    for phrase, stems, weight in terms:
        # A phrase is in at most as many topics as its rarest word.
        df = frequencies.get(stems[0], 0) if len(stems) == 1 else min(
            frequencies.get(stem, 0) for stem in stems)
        if df:
            idf = idf_of.get(df)
            if idf is None:
                idf = idf_of[df] = _idf(total, df)
            # Best first, then by phrase: phrases differ, so the rest is never compared.
            candidates.append((-(weight * idf), phrase, weight, df, stems))
    candidates.sort()
    parts: list[tuple[str, ...]] = []
    postings = used = 0
    for _, phrase, weight, df, stems in candidates:
        if used >= MAX_QUERY_TERMS:
            break
        if postings + df > MAX_POSTINGS:
            continue
        parts.extend([stems] * max(1, min(MAX_REPEAT, round(weight))))
        postings += df
        used += 1
    return parts


@functools.lru_cache(maxsize=4)
def _idfs(total: int) -> dict[int, float]:
    """{rows holding a term: its idf} for a catalog of ``total`` topics, filled as asked."""
    return {}


def _idf(total: int, df: int) -> float:
    # FTS5's own formula, floored the same way.
    idf = math.log((total - df + 0.5) / (df + 0.5))
    return idf if idf > 0 else 1e-6


def forget_vocabulary(db: sqlite_utils.Database) -> None:
    """Drop what is cached about the catalog of ``db``: the catalog is about to change."""
    _CATALOGS.pop(db, None)


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


def _letter_terms(subject: str, text: str, words=None) -> list[tuple[str, tuple[str, ...], float]]:
    """(phrase, its stems, weight) for each term of a letter; see letter_terms.

    ``words`` is the letter as _letter_words gives it, if already taken.
    """
    synonyms = _synonyms()
    surface: dict[tuple[str, ...], str] = {}
    # Per term: [uses in the body, in the subject?] for the reader's own words
    # (by stem: a string hashes once, a tuple every time) and, separately, for
    # the column's words the synonyms file added.
    direct: dict[str, list] = {}
    added: dict[tuple[str, ...], list] = {}
    (subject_words, subject_stems), (body_words, body_stems) = words or _letter_words(subject, text)
    for words, stems, is_subject in ((subject_words, subject_stems, True), (body_words, body_stems, False)):
        for index, word in enumerate(words):
            stem = stems[index]
            if len(word) > 1 and word not in STOP_WORDS and not word.isdigit():
                entry = direct.get(stem)
                if entry is None:
                    surface.setdefault((stem,), word)
                    entry = direct[stem] = [0, False]
                if is_subject:
                    entry[1] = True
                else:
                    entry[0] += 1
            if stem in synonyms:
                for reader, targets in synonyms[stem]:
                    if len(reader) == 1 or tuple(stems[index:index + len(reader)]) == reader:
                        for phrase, key in targets:
                            surface.setdefault(key, phrase)
                            _count(added, key, is_subject)
    terms = []
    log = math.log
    for key, phrase in surface.items():
        # _weight(direct) + SYNONYM_WEIGHT * _weight(added), written out.
        mine = direct.get(key[0]) if len(key) == 1 else None
        weight = 0.0 if mine is None else (
            (0.0 if mine[0] <= 0 else 1.0 + log(mine[0])) + (SUBJECT_WEIGHT if mine[1] else 0.0))
        theirs = added.get(key)
        weight = weight + SYNONYM_WEIGHT * (0.0 if theirs is None else (
            (0.0 if theirs[0] <= 0 else 1.0 + log(theirs[0])) + (SUBJECT_WEIGHT if theirs[1] else 0.0)))
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
    started = False  # a line with words kept: greetings come before
    for line in text[:MAX_LETTER_CHARS].splitlines():
        # A quote header has "wrote:" or a row of dashes: only such a line is matched.
        if line.rstrip() == "--" or (("-" in line or ":" in line) and _QUOTE_HEADER.match(line)):
            break
        if line.lstrip().startswith(">"):
            continue
        if not started:
            if _GREETING.match(line):
                continue
            started = bool(line.strip())
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
