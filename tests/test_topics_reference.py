"""The faster topic matcher links what the matcher before it linked, letter for letter.

``topics_reference.py`` is a frozen copy of the matcher as it was (bm25 asked
of SQLite per letter, the letter read three times, theme phrases looked up at
every word). Every test here runs a letter through both, on the same
database, and asks for the same topics in the same order with the same
scores, and the same ``fell_back``: on generated letters made of the themes'
and topics' own words, on every development letter, with and without labelled
letters, and across changes of the catalog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import random
import tomllib
from email.message import EmailMessage
from email import policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import topics_reference as reference
from conftest import REPO
from mailer import topics
from mailer.store import archive
from mailer.store.db import open_database
from mailer.topics import matching, themes, wordindex

CATALOG = REPO / "examples" / "topics.toml"
DEVELOPMENT = [REPO / "bench" / "data" / "relevance_letters.toml", REPO / "bench" / "data" / "relevance_dev2.toml"]
NOON = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def clock():
    return NOON


def development_letters() -> list[tuple[str, str]]:
    letters = []
    for path in DEVELOPMENT:
        for letter in tomllib.loads(path.read_text(encoding="utf-8"))["letter"]:
            letters.append((letter["subject"], letter["body"]))
    return letters


def catalog(*, examples: bool = True) -> list[topics.Topic]:
    found, problems = topics.load_catalog(CATALOG)
    assert problems == []
    return found if examples else [dataclasses.replace(t, examples=()) for t in found]


def open_catalog(tmp_path, name: str, found: list[topics.Topic]):
    db = open_database(tmp_path / f"{name}.db")
    topics.import_topics(db, found, clock=clock)
    return db


@pytest.fixture
def with_examples(tmp_path):
    db = open_catalog(tmp_path, "with", catalog())
    yield db
    db.close()


@pytest.fixture
def without_examples(tmp_path):
    db = open_catalog(tmp_path, "without", catalog(examples=False))
    yield db
    db.close()


def outcome(found):
    """topics_for_letter's answer as plain values (the two modules' TopicMatch classes differ)."""
    matches, fell_back = found
    return [dataclasses.astuple(m) for m in matches], fell_back


def assert_same(db, subject: str, body: str, limits=range(1, 6)) -> None:
    """Both matchers give the same topics, scores, order and fell_back, for every limit and urgency."""
    for urgent in (False, True):
        for limit in limits:
            new = outcome(topics.topics_for_letter(db, subject, body, limit=limit, urgent=urgent))
            old = outcome(reference.topics_for_letter(db, subject, body, limit=limit, urgent=urgent))
            assert new == old, (limit, urgent)
    new_ranked = [dataclasses.astuple(m) for m in topics.match_topics(db, subject, body, limit=50, min_score=0)]
    old_ranked = [dataclasses.astuple(m) for m in reference.match_topics(db, subject, body, limit=50, min_score=0)]
    assert new_ranked == old_ranked
    assert list(topics.letter_terms(subject, body).items()) == list(reference.letter_terms(subject, body).items())


# --------------------------------------------------------------------------
# Letters made of the words the matcher looks for


def _vocabulary() -> list[str]:
    words = set()
    for theme in themes.load_themes().values():
        for phrase in theme.phrases + theme.mentions:
            words.update(phrase.split())
    for topic in catalog():
        words.update(f"{topic.title} {topic.summary} {' '.join(topic.keywords)}".lower().split())
    return sorted(words)


VOCABULARY = _vocabulary()
PHRASES = sorted({p for t in themes.load_themes().values() for p in t.phrases + t.mentions})
PIECES = st.one_of(
    st.sampled_from(VOCABULARY), st.sampled_from(PHRASES), st.sampled_from(PHRASES),
    st.sampled_from(["?", ".", "!", "\n", "\n\n", ",", "my", "I", "the", "and", "2024", "é", "Ünïcode"]),
)
LINES = st.one_of(
    st.lists(PIECES, max_size=25).map(" ".join),
    st.sampled_from(["Dear column,", "Hi there", "> quoted line about grief and money",
                     "On Tue, 3 Dec 2026, Column wrote:", "-----Original Message-----", "--",
                     "What should I do?", "How do I stop worrying about money?"]),
)
LETTERS = st.tuples(st.lists(PIECES, max_size=8).map(" ".join), st.lists(LINES, max_size=30).map("\n".join))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(letter=LETTERS)
def test_generated_letters_get_what_they_got_before(with_examples, letter):
    assert_same(with_examples, *letter, limits=(1, 3, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(letter=LETTERS)
def test_generated_letters_get_what_they_got_before_without_catalog_examples(without_examples, letter):
    assert_same(without_examples, *letter, limits=(1, 3, 5))


@settings(max_examples=300, deadline=None)
@given(stems=st.lists(st.one_of(st.sampled_from(sorted({s for first in themes.phrase_index().values()
                                                        for by_len in first.values() for key in by_len
                                                        for s in key})),
                                st.just("xyz")), max_size=60))
def test_theme_evidence_is_the_same_to_the_last_bit(stems):
    assert themes.theme_evidence(stems) == reference.theme_evidence(stems)


# --------------------------------------------------------------------------
# The development letters


def test_every_development_letter_gets_what_it_got_before(with_examples, without_examples):
    letters = development_letters()
    assert len(letters) > 250
    for subject, body in letters:
        assert_same(with_examples, subject, body)
        assert_same(without_examples, subject, body, limits=(3,))


def test_letters_labelled_by_replies_vote_as_before(with_examples):
    """Letters the columnist answered with a topic's link join the vote, in both matchers alike."""
    db = with_examples
    letters = development_letters()
    slugs = [t.slug for t in catalog()]
    rng = random.Random(5)
    for number, (subject, body) in enumerate(letters[:60]):
        message = EmailMessage(policy=policy.default)
        message["From"] = f"reader{number}@example.org"
        message["To"] = "letters@column.example"
        message["Subject"] = subject
        message["Message-ID"] = f"<labelled{number}@example.org>"
        message.set_content(body)
        stored = archive.store_inbound(db, message.as_bytes(), archive.Envelope(
            f"reader{number}@example.org", ("letters@column.example",)), kind="letter", clock=clock)
        links = " and ".join(f"https://column.example/topics/{slug}" for slug in rng.sample(slugs, 2))
        with db.atomic():
            topics.record_linked_topics(db, stored.message_id, f"Dear reader,\n\nRead {links}.\n", clock=clock)
    assert db.execute("SELECT count(*) FROM topic_examples").fetchone()[0] == 120
    for subject, body in letters[60:]:
        assert_same(db, subject, body, limits=(1, 3))


# --------------------------------------------------------------------------
# Changes of the catalog


def test_a_topic_added_removed_or_edited_is_seen_by_the_next_letter(with_examples):
    db = with_examples
    subject, body = "Beekeeping", "My bees swarmed and the beekeeping club blames me. What now?"
    assert_same(db, subject, body)
    before = topics.match_topics(db, subject, body, min_score=0)
    assert "beekeeping-worries" not in [m.slug for m in before]

    bees = topics.Topic("beekeeping-worries", "Beekeeping Worries", "https://column.example/topics/bees",
                        "When the bees swarm and the club blames you.", ("beekeeping", "bees", "swarm"),
                        "2026-11-01", themes=("worry",), examples=("My bees swarmed again.",))
    topics.import_topics(db, catalog() + [bees], clock=clock)
    assert_same(db, subject, body)
    assert topics.topics_for_letter(db, subject, body)[0][0].slug == "beekeeping-worries"

    edited = dataclasses.replace(bees, title="Swarming", keywords=("swarm",), summary="When they leave.")
    topics.import_topics(db, catalog() + [edited], clock=clock)
    assert_same(db, subject, body)
    assert [m.title for m in topics.match_topics(db, subject, body, min_score=0)
            if m.slug == "beekeeping-worries"] == ["Swarming"]

    db.execute("DELETE FROM topics WHERE slug = ?", ["beekeeping-worries"])
    db.conn.commit()
    assert_same(db, subject, body)
    assert "beekeeping-worries" not in [m.slug for m in topics.match_topics(db, subject, body, min_score=0)]


def _bench_topics():
    """bench/topics.py, for its generated topics of realistic lengths."""
    spec = importlib.util.spec_from_file_location("bench_topics", REPO / "bench" / "topics.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_equal_scores_keep_the_topics_sqlite_kept(tmp_path):
    """More identical topics than the candidates kept: the same ones win the ties as with SQL."""
    twin = next(t for t in catalog() if t.slug == "anxiety-and-worry")
    twins = [dataclasses.replace(twin, slug=f"twin-{n:02d}", url=f"https://column.example/t/{n}")
             for n in range(50)]
    # Fewer twins than half the catalog, so that their words keep an idf and their ties matter.
    db = open_catalog(tmp_path, "twins", catalog() + _bench_topics().generate(60) + twins)
    letter = (twin.title, f"{twin.summary} {' '.join(twin.keywords)}")
    chosen = [m.slug for m in topics.topics_for_letter(db, *letter, limit=5)[0]]
    assert chosen == ["anxiety-and-worry", "twin-00", "twin-01", "twin-02", "twin-03"]
    for subject, body in [letter] + development_letters()[:40]:
        assert_same(db, subject, body, limits=(3, 5))
    db.close()


def test_a_big_generated_catalog_matches_as_before(tmp_path):
    """bench/topics.py's generated topics: long postings, MAX_POSTINGS and ties at scale."""
    db = open_catalog(tmp_path, "big", catalog() + _bench_topics().generate(600))
    for subject, body in development_letters()[::4]:
        assert_same(db, subject, body, limits=(3,))
    db.close()


# --------------------------------------------------------------------------
# bm25 in memory against SQLite's


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(VOCABULARY[:2000] + ["panic attack", "self esteem", "what to expect"]),
                      min_size=1, max_size=12),
       repeats=st.lists(st.integers(1, 3), min_size=12, max_size=12))
def test_bm25_in_memory_is_fts5s_to_the_last_bit(with_examples, words, repeats):
    db = with_examples
    index = wordindex.WordIndex.read(db)
    phrases, parts = [], []
    for word, times in zip(words, repeats):
        tokens = matching._tokens(word)
        if not tokens:
            continue
        phrases.extend([tuple(map(matching._stem, tokens))] * times)
        parts.extend([f'"{" ".join(tokens)}"'] * times)
    if not parts:
        return
    rows = db.execute(
        "SELECT rowid, bm25(topics_fts, ?, ?, ?) AS rank FROM topics_fts WHERE topics_fts MATCH ? "
        "ORDER BY rank LIMIT ?", [*matching.COLUMN_WEIGHTS, " OR ".join(parts), 40]).fetchall()
    assert [(rowid, -1.0 * score) for rowid, score in index.best(phrases, matching.COLUMN_WEIGHTS, 40)] == rows
