"""The topic matcher as it was before it was made faster: the reference the tests hold it to.

A frozen copy of ``mailer/topics/matching.py`` (and of ``themes.theme_evidence``,
``themes.topic_profile`` and ``examples.NeighbourVote``) as they stood before
the catalog's words were scored in memory and a letter was read once. Tests
compare ``mailer.topics`` with it, letter by letter; it is never used by the
program. Do not edit it to make a test pass.
"""


from __future__ import annotations

import dataclasses
import heapq
import json
import math
import re
import weakref
from dataclasses import dataclass

import sqlite_utils

from mailer.topics import examples as labelled
from mailer.topics.stemmer import STOP_WORDS, _stem
from mailer.topics.themes import MENTION_WEIGHT, PROFILE_CUTOFF, TOPIC_FIELD_WEIGHTS, WORD_WEIGHT, phrase_index, word_index  # noqa: F401
from mailer.topics.examples import MIN_SIMILARITY, NEIGHBOURS, Features, _unit  # noqa: F401
from collections.abc import Callable, Iterable

# The tuned constants and the result type are the program's own: the tests
# hold the old *way of matching* to the new one, so a retuned weight must
# change both sides alike.
from mailer.topics.matching import (  # noqa: E402
    _BM25_K1, CANDIDATES, COLUMN_WEIGHTS, EXAMPLE_WEIGHT, MAX_BODY_CHARS, MAX_LETTER_CHARS,
    MAX_POSTINGS, MAX_QUERY_TERMS, MAX_REPEAT, MIN_SCORE, QUESTION_WEIGHT, RELATIVE_FIT,
    STARTER_WEIGHT, SUBJECT_WEIGHT, SYNONYM_WEIGHT, THEME_IDF_POWER, THEME_WEIGHT, URGENT_THEMES,
    TopicMatch,
)
# Helpers the faster matcher did not change, shared rather than copied.
from mailer.topics.matching import _count, _damped, _idf, _synonyms, _tokens, _weight  # noqa: E402


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
    return [m for m in _ranked(db, subject, text, keep=max(limit, CANDIDATES)) if m.score >= threshold][:limit]


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
    chosen = ([m for m in ranked if m.score >= RELATIVE_FIT * best][:limit]
              if best >= MIN_SCORE else [])
    fell_back = not chosen
    if urgent:
        # A reader in crisis gets the column's pieces on how they feel, not
        # its welcome pieces, even where a starter matched.
        chosen = [m for m in chosen if not m.starter]
        chosen += _urgent_topics(db, ranked, {m.slug for m in chosen})[: limit - len(chosen)]
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


def _urgent_topics(db: sqlite_utils.Database, ranked: list[TopicMatch], taken: set[str]) -> list[TopicMatch]:
    """The catalog's topics on URGENT_THEMES, not yet taken: best for this letter first."""
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
    for slug in order:
        title, url, summary, starter = model.topics[slug][:4]
        found.append(TopicMatch(slug, title, url, summary, scores.get(slug, 0.0), bool(starter)))
    return found


def _ranked(db: sqlite_utils.Database, subject: str, text: str, keep: int = CANDIDATES) -> list[TopicMatch]:
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
    words = _letter_words(subject, text)
    subject_stems, body_stems = words[0][1], words[1][1]
    scores = _word_scores(db, _letter_terms(subject, text, words))
    evidence = letter_themes(subject_stems, body_stems)
    asked = dict(evidence)
    for theme_id, value in theme_evidence(_question_stems(text)).items():
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
        matches.append(TopicMatch(slug, title, url, summary, round(scores[slug], 3), starter))
    return matches


def _word_scores(db: sqlite_utils.Database, terms) -> dict[str, float]:
    """{slug: bm25 in units of one rare word} for the topics sharing informative words."""
    total, frequencies = _vocabulary(db)
    query = _query(terms, total, frequencies)
    if not query:
        return {}
    rows = db.execute(
        "WITH hits AS (SELECT rowid, bm25(topics_fts, ?, ?, ?) AS rank FROM topics_fts "
        "WHERE topics_fts MATCH ? ORDER BY rank LIMIT ?) "
        "SELECT t.slug, hits.rank FROM hits JOIN topics t ON t.rowid = hits.rowid",
        [*COLUMN_WEIGHTS, query, CANDIDATES],
    ).fetchall()
    # The most bm25 gives one word found in a single topic: scores are in
    # units of that, so they read the same for a catalog of 20 or 5,000.
    unit = _idf(total, 1) * (_BM25_K1 + 1)
    return {slug: -rank / unit for slug, rank in rows}


def letter_stems(subject: str, text: str) -> tuple[list[str], list[str]]:
    """Every word of the subject and of the reader's own words in the body, stemmed."""
    (_, subject_stems), (_, body_stems) = _letter_words(subject, text)
    return subject_stems, body_stems


def _letter_words(subject: str, text: str) -> tuple[tuple[list[str], list[str]], ...]:
    """((words, stems) of the subject, (words, stems) of the reader's own words in the body)."""
    taken = []
    for words in (_tokens(subject or ""), _tokens(_letter_body(text or ""))):
        taken.append((words, [_stem(w) for w in words]))
    return tuple(taken)


_QUESTION = re.compile(r"[^.?!\n]*\?")


def _question_stems(text: str) -> list[str]:
    """The stems of the sentences in the reader's own words that end in a question mark."""
    return [_stem(w) for question in _QUESTION.findall(_letter_body(text or ""))
            for w in _tokens(question)]


def letter_themes(subject_stems: list[str], body_stems: list[str]) -> dict[str, float]:
    """The theme evidence of a letter: the body's, plus the subject's counted SUBJECT_WEIGHT times."""
    evidence = theme_evidence(body_stems)
    for theme_id, value in theme_evidence(subject_stems).items():
        evidence[theme_id] = evidence.get(theme_id, 0.0) + SUBJECT_WEIGHT * value
    return evidence


def _features(stems: list[str], evidence: dict[str, float]) -> dict[str, float]:
    """A letter for the neighbours' vote: its content stems (damped counts) and its themes."""
    counts: dict[str, int] = {}
    for stem in stems:
        if len(stem) > 2 and stem not in STOP_WORDS and not stem.isdigit():
            counts[stem] = counts.get(stem, 0) + 1
    features = {stem: _damped(n) for stem, n in counts.items()}
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
    _vote: tuple | None = None

    def vote(self, db: sqlite_utils.Database) -> NeighbourVote:
        """The labelled letters' vote, rebuilt when the desk's labelled letters change."""
        state = labelled.examples_state(db)
        if self._vote is None or self._vote[0] != state:
            letters = [(subject, text, slugs)
                       for _, subject, text, slugs in labelled.labelled_letters(db)]
            self._vote = (state, NeighbourVote.build(letters, _letter_features))
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
    for slug, title, url, summary, keywords, starter, body, chosen in db.execute(
        "SELECT slug, title, url, summary, keywords, starter, body, themes FROM topics"
    ):
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
    model = _Catalog(topics, by_theme, frozenset(s for s, info in topics.items() if info[3]), theme_idf)
    if marker is not None:
        _CATALOGS[db] = (marker[0], model)
    return model


def topic_themes(db: sqlite_utils.Database) -> dict[str, dict[str, float]]:
    """{slug: {theme: share}}: each topic's themes, as matching sees them."""
    return {slug: dict(info[4]) for slug, info in _catalog(db).topics.items()}


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
    """Drop what is cached about the catalog of ``db``: the catalog is about to change."""
    _VOCABULARIES.pop(db, None)
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
    # and, separately, for the column's words the synonyms file added.
    direct: dict[tuple[str, ...], list] = {}
    added: dict[tuple[str, ...], list] = {}
    (subject_words, subject_stems), (body_words, body_stems) = words or _letter_words(subject, text)
    for words, stems, is_subject in ((subject_words, subject_stems, True), (body_words, body_stems, False)):
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


# -- themes.py as it was

def theme_evidence(stems: list[str]) -> dict[str, float]:
    """How much a text, as a list of stems, speaks of each theme.

    Each phrase found adds its weight; the same phrase found n times adds
    1 + ln(n) times its weight, so a letter that says "tired" five times is
    not five times as much about sleep. Phrases of one theme do not overlap:
    the longest phrase starting first wins.
    """
    index = phrase_index()
    counts: dict[tuple[tuple[str, ...], str], list] = {}
    covered: dict[str, int] = {}  # theme -> first position after its last phrase found
    for position, stem in enumerate(stems):
        by_length = index.get(stem)
        if not by_length:
            continue
        for length, phrases in by_length.items():
            key = tuple(stems[position:position + length])
            for theme_id, weight in phrases.get(key, ()):
                # "paid the bills" is one phrase, not also "the bills" and "bills".
                if covered.get(theme_id, 0) <= position:
                    covered[theme_id] = position + length
                    entry = counts.setdefault((key, theme_id), [0, weight])
                    entry[0] += 1
    evidence: dict[str, float] = {}
    for (_, theme_id), (n, weight) in counts.items():
        evidence[theme_id] = evidence.get(theme_id, 0.0) + weight * (1.0 + math.log(n))
    if WORD_WEIGHT:
        words = word_index()
        for stem in set(stems):
            found = words.get(stem)
            if found:
                evidence[found[0]] = evidence.get(found[0], 0.0) + WORD_WEIGHT * found[1]
    return evidence


def topic_profile(fields: dict[str, list[str]], chosen: tuple[str, ...] = ()) -> dict[str, tuple[float, float]]:
    """A topic's themes: {theme: (share between 0 and 1, strength)}.

    ``chosen`` are the themes the columnist set in the catalog: they are the
    profile (each share 1.0, and the greatest strength, so a curated topic
    leads its themes), in the columnist's order. Otherwise the themes come
    from the topic's own stems per field (title, keywords, summary, body,
    weighted by TOPIC_FIELD_WEIGHTS): the strength is that weighted
    evidence, the share its ratio to the strongest theme's, and themes below
    PROFILE_CUTOFF of the strongest are left out.
    """
    if chosen:
        return {theme_id: (1.0, math.inf) for theme_id in chosen}
    total: dict[str, float] = {}
    for field, stems in fields.items():
        for theme_id, value in theme_evidence(stems).items():
            total[theme_id] = total.get(theme_id, 0.0) + TOPIC_FIELD_WEIGHTS.get(field, 1.0) * value
    if not total:
        return {}
    strongest = max(total.values())
    return {t: (round(v / strongest, 3), v) for t, v in sorted(total.items(), key=lambda kv: -kv[1])
            if v >= PROFILE_CUTOFF * strongest}


# -- examples.py as it was

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
        query = _unit({k: v * self.idf.get(k, rarest) for k, v in letter.items()})
        similarity: dict[int, float] = {}
        for key, weight in query.items():
            for number, other in self.postings.get(key, ()):
                similarity[number] = similarity.get(number, 0.0) + weight * other
        nearest = heapq.nlargest(NEIGHBOURS, ((v, n) for n, v in similarity.items() if v >= MIN_SIMILARITY))
        votes: dict[str, float] = {}
        for value, number in nearest:
            for slug in self.labels[number]:
                votes[slug] = votes.get(slug, 0.0) + value / NEIGHBOURS
        return votes
