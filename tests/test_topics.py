"""The column's topics: imported from a catalog, Markdown or a feed, and matched to letters.

Commands run through click's CliRunner against a real SQLite file named in a
real config file; the tests then look at the rows in that file. Matching is
checked on the example letter and on mail the column has nothing to say about.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import http.server
import json
import re
import sqlite3
import threading
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer import topics
from mailer.topics import matching, stemmer
from mailer.cli import main
from mailer.store.db import open_database

from conftest import REPO, rows

EXAMPLES = REPO / "examples"
CATALOG = EXAMPLES / "topics.toml"
STARTERS = ["start-here-how-this-column-works", "self-therapy-first-steps",
            "enjoy-your-changes-keeping-progress"]
NOON = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def fixed_clock(moment: dt.datetime = NOON):
    return lambda: moment


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "mailer.db"


@pytest.fixture
def cli(tmp_path, db_path):
    """Run ``mailer --config <tmp config> ARGS...``; returns the click Result."""
    config = tmp_path / "mailer.toml"
    config.write_text(f'[storage]\ndatabase = "{db_path.as_posix()}"\n', encoding="utf-8")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, ["--config", str(config), *args], catch_exceptions=False)

    return run


@pytest.fixture
def db(db_path):
    database = open_database(db_path)
    yield database
    database.close()


@pytest.fixture
def catalog_db(db):
    """A database holding the 26 topics of examples/topics.toml."""
    found, problems = topics.load_catalog(CATALOG)
    assert problems == []
    topics.import_topics(db, found, clock=fixed_clock())
    return db


def write_eml(path: Path, subject: str, body: str) -> Path:
    path.write_bytes(
        (f"From: Reader <reader@example.org>\r\nTo: letters@column.example\r\n"
         f"Subject: {subject}\r\nMessage-ID: <{path.stem}@example.org>\r\n"
         f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode("utf-8")
    )
    return path


# -- importing each format --------------------------------------------------------------

def test_the_example_catalog_imports_every_topic_with_its_starters(cli, db_path):
    result = cli("topics", "import", str(CATALOG))

    assert result.exit_code == 0, result.output
    assert "26 added, 0 updated, 0 unchanged" in result.output
    stored = rows(db_path, "SELECT * FROM topics ORDER BY published")
    assert len(stored) == 26
    assert [r["slug"] for r in stored if r["starter"]] == STARTERS
    first = stored[0]
    assert first["url"] == "https://column.example/topics/start-here-how-this-column-works"
    assert first["published"] == "2025-01-06"
    assert json.loads(first["keywords"])[:2] == ["start here", "new reader"]
    assert first["source"] == str(CATALOG)


def test_a_markdown_topic_brings_its_front_matter_and_its_body(cli, db_path):
    result = cli("topics", "import", str(EXAMPLES / "topic.md"))

    assert result.exit_code == 0, result.output
    assert "1 added" in result.output
    [topic] = rows(db_path, "SELECT * FROM topics")
    assert topic["slug"] == "perfectionism-at-home"
    assert topic["title"] == "Perfectionism at Home, or Why the House Is Never Finished"
    assert json.loads(topic["keywords"]) == [
        "perfectionism", "tidy house", "cleaning", "control", "household chores",
        "family tension", "rest", "good enough"]
    assert topic["published"] == "2026-10-01"
    assert topic["starter"] == 0
    assert topic["body"].startswith("Some readers write to me about perfectionism at work")
    assert topic["body"].endswith("Enjoy Your Changes!")


def test_a_folder_of_markdown_files_imports_each_one(cli, db_path, tmp_path):
    folder = tmp_path / "pieces"
    folder.mkdir()
    (folder / "a.md").write_text((EXAMPLES / "topic.md").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "b.md").write_text(
        "---\nslug: rest-is-not-lazy\ntitle: \"Rest Is Not Laziness\"\n"
        "url: https://column.example/topics/rest-is-not-lazy\n"
        "summary: Why stopping is part of the work.\nkeywords: [rest, 'guilt', burnout]\n"
        "published: 2026-11-02\nstarter: true\n---\nBody text.\n",
        encoding="utf-8",
    )
    (folder / "notes.txt").write_text("not a topic", encoding="utf-8")

    result = cli("topics", "import", str(folder))

    assert result.exit_code == 0, result.output
    assert "2 added" in result.output
    rest = rows(db_path, "SELECT * FROM topics WHERE slug = 'rest-is-not-lazy'")[0]
    assert rest["title"] == "Rest Is Not Laziness"
    assert json.loads(rest["keywords"]) == ["rest", "guilt", "burnout"]
    assert rest["starter"] == 1 and rest["body"] == "Body text."


def test_the_atom_feed_gives_slugs_from_links_and_keywords_from_categories(cli, db_path):
    result = cli("topics", "import", str(EXAMPLES / "feed.xml"))

    assert result.exit_code == 0, result.output
    assert "3 added, 0 updated, 0 unchanged" in result.output
    stored = {r["slug"]: r for r in rows(db_path, "SELECT * FROM topics")}
    assert set(stored) == {"holiday-stress", "perfectionism", "making-hard-decisions"}
    perfectionism = stored["perfectionism"]
    assert perfectionism["title"] == "Good Enough Is a Skill: Loosening Perfectionism"
    assert perfectionism["url"] == "https://column.example/topics/perfectionism"
    assert perfectionism["published"] == "2026-10-19"  # <published>, not the later <updated>
    assert json.loads(perfectionism["keywords"]) == [
        "perfectionism", "high standards", "fear of failure", "never good enough", "overchecking"]
    assert perfectionism["summary"].startswith("When nothing is ever finished")


RSS_WITH_HTML = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Column</title><link>https://column.example/</link>
<description>d</description>
<item>
  <title>Rest &amp; Recovery</title>
  <link>https://column.example/topics/rest-and-recovery/</link>
  <description>&lt;p&gt;Rest is &lt;em&gt;work&lt;/em&gt; too.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;</description>
  <category>rest</category><category>burnout</category>
  <pubDate>Mon, 02 Nov 2026 09:00:00 +0000</pubDate>
</item>
<item>
  <title>A post with no date</title>
  <link>https://column.example/topics/undated</link>
  <description>Undated.</description>
</item>
</channel></rss>
"""


def test_an_rss_summary_loses_its_html_and_an_undated_item_is_reported(tmp_path):
    feed = tmp_path / "feed.rss"
    feed.write_text(RSS_WITH_HTML, encoding="utf-8")

    found, problems = topics.load_catalog(feed)

    [topic] = found
    assert topic.slug == "rest-and-recovery"
    assert topic.title == "Rest & Recovery"
    assert topic.summary == "Rest is work too."
    assert topic.keywords == ("rest", "burnout")
    assert topic.published == "2026-11-02"
    assert problems == [f"{feed}: entry 2 ('A post with no date'): no published or updated date"]


@pytest.fixture
def feed_server():
    """examples/ served over real HTTP on loopback; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(EXAMPLES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


def test_a_feed_is_fetched_from_a_url(cli, db_path, feed_server):
    result = cli("topics", "import", f"{feed_server}/feed.xml")

    assert result.exit_code == 0, result.output
    assert "3 added" in result.output
    assert rows(db_path, "SELECT source FROM topics")[0]["source"] == f"{feed_server}/feed.xml"


def test_a_missing_feed_url_is_a_clear_error(cli, feed_server):
    result = cli("topics", "import", f"{feed_server}/no-such-feed.xml")

    assert result.exit_code == 1
    assert f"{feed_server}/no-such-feed.xml: the server answered 404" in result.output


# -- importing again --------------------------------------------------------------------

def test_importing_again_updates_a_changed_title_in_place(cli, db_path, tmp_path):
    assert cli("topics", "import", str(CATALOG)).exit_code == 0
    before = {r["slug"]: r["rowid"] for r in rows(db_path, "SELECT rowid, slug FROM topics")}
    edited = tmp_path / "topics.toml"
    edited.write_text(
        CATALOG.read_text(encoding="utf-8").replace(
            'title = "When Anger Runs the Show"', 'title = "When Fury Runs the Show"'),
        encoding="utf-8",
    )

    result = cli("topics", "import", str(edited))

    assert result.exit_code == 0, result.output
    assert "0 added, 1 updated, 25 unchanged" in result.output
    after = {r["slug"]: r["rowid"] for r in rows(db_path, "SELECT rowid, slug FROM topics")}
    assert after == before  # same rows, none duplicated
    anger = rows(db_path, "SELECT * FROM topics WHERE slug = 'handling-anger'")[0]
    assert anger["title"] == "When Fury Runs the Show"
    assert anger["updated_at"] >= anger["imported_at"]
    # The full-text index followed the update.
    hits = rows(db_path, "SELECT t.slug FROM topics_fts JOIN topics t ON t.rowid = topics_fts.rowid "
                         "WHERE topics_fts MATCH 'fury'")
    assert [h["slug"] for h in hits] == ["handling-anger"]
    assert rows(db_path, "SELECT count(*) AS n FROM topics_fts WHERE topics_fts MATCH 'title:anger'")[0]["n"] == 0


def test_a_feed_does_not_undo_the_starter_flag_the_catalog_set(cli, db_path, tmp_path):
    assert cli("topics", "import", str(CATALOG)).exit_code == 0
    feed = tmp_path / "feed.xml"
    feed.write_text(
        (EXAMPLES / "feed.xml").read_text(encoding="utf-8").replace(
            "https://column.example/topics/perfectionism\"",
            "https://column.example/topics/self-therapy-first-steps\""),
        encoding="utf-8",
    )

    result = cli("topics", "import", str(feed))

    assert result.exit_code == 0, result.output
    assert "2 added, 1 updated, 0 unchanged" in result.output
    topic = rows(db_path, "SELECT * FROM topics WHERE slug = 'self-therapy-first-steps'")[0]
    assert topic["title"] == "Good Enough Is a Skill: Loosening Perfectionism"
    assert topic["starter"] == 1


# -- bad input --------------------------------------------------------------------------

BAD_CATALOG = """
[[topic]]
slug = "good-one"
title = "A Good One"
url = "https://column.example/topics/good-one"
summary = "Fine."
keywords = ["fine"]
published = 2026-01-05

[[topic]]
slug = "foo"
title = "No address"
summary = "Where does it live?"
keywords = ["lost"]
published = 2026-01-12

[[topic]]
slug = "bad-date"
title = "Bad date"
url = "https://column.example/topics/bad-date"
summary = "When?"
keywords = ["time"]
published = "last tuesday"
starter = "yes"

[[topic]]
slug = "another-good-one"
title = "Another Good One"
url = "https://column.example/topics/another-good-one"
summary = "Also fine."
keywords = []
published = "2026-02-02"
"""


def test_bad_entries_are_named_by_file_and_key_and_the_good_ones_still_import(cli, db_path, tmp_path):
    catalog = tmp_path / "x.toml"
    catalog.write_text(BAD_CATALOG, encoding="utf-8")

    result = cli("topics", "import", str(catalog))

    assert result.exit_code == 1
    assert f"{catalog}: topic 2 (slug 'foo'): missing key 'url'" in result.output
    assert (f"{catalog}: topic 3 (slug 'bad-date'): key 'published': expected a date like "
            "2025-01-06, got 'last tuesday'") in result.output
    assert f"{catalog}: topic 3 (slug 'bad-date'): key 'starter': expected true or false" in result.output
    assert "2 added, 0 updated, 0 unchanged; 3 problems" in result.output
    assert [r["slug"] for r in rows(db_path, "SELECT slug FROM topics ORDER BY slug")] == [
        "another-good-one", "good-one"]


@pytest.mark.parametrize("name, text, expected", [
    ("t.toml", 'this is = not [toml', "t.toml: not valid TOML"),
    ("t.toml", 'title = "no topics"\n', "t.toml: no [[topic]] tables found"),
    ("t.xml", "<html><body>not a feed</body></html>", "t.xml: not a readable RSS or Atom feed"),
    ("t.csv", "slug,title\n", "t.csv: cannot tell what kind of catalog this is"),
], ids=["broken TOML", "TOML without topics", "HTML instead of a feed", "unknown file type"])
def test_a_source_that_cannot_be_read_at_all_is_one_clear_error(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    with pytest.raises(topics.TopicImportError) as raised:
        topics.load_catalog(path)

    assert str(raised.value).startswith(str(tmp_path / expected.split(":")[0]) + ":")
    assert expected.split(": ", 1)[1] in str(raised.value)


@pytest.mark.parametrize("text, expected", [
    ("# Just a heading\n", "no front matter (a block between '---' lines at the top)"),
    ("---\nslug: x\n", "the front matter is not closed with a '---' line"),
    ("---\nslug x\n---\n", "line 2: expected 'key: value', got 'slug x'"),
    ("---\nslug: a\ntitle: T\nurl: https://column.example/a\nsummary: S\nkeywords: [k]\n---\n",
     "(slug 'a'): missing key 'published'"),
], ids=["no front matter", "front matter not closed", "a line without a colon", "a missing key"])
def test_a_markdown_file_with_a_problem_is_reported_by_name(tmp_path, text, expected):
    path = tmp_path / "piece.md"
    path.write_text(text, encoding="utf-8")

    found, problems = topics.load_catalog(path)

    assert found == []
    assert problems == [f"{path}: {expected}"] or problems == [f"{path} {expected}"]


@pytest.mark.parametrize("entry, expected", [
    ('slug = "a"\nkeyword = ["x"]', "unknown key 'keyword' (known: slug, title, url, summary, keywords"),
    ('slug = "has space"', "key 'slug': 'has space' is not a slug"),
    ('slug = "a"\nurl = "column.example/a"', "key 'url': expected an http(s) address"),
    ('slug = "a"\nkeywords = "one, two"', "key 'keywords': expected a list of words"),
    ('slug = "a"\nsummary = ""', "key 'summary': expected non-empty text"),
    ('slug = "a"\nthemes = ["worry", "wories"]', "key 'themes': unknown theme 'wories' (known: anger, "),
    ('slug = "a"\nthemes = "worry"', "key 'themes': expected a list of theme names"),
    ('slug = "a"\nexamples = "a letter"', "key 'examples': expected a list of letters"),
], ids=["misspelt key", "slug with a space", "url without a scheme", "keywords not a list",
        "empty summary", "unknown theme", "themes not a list", "examples not a list"])
def test_each_bad_key_is_named(tmp_path, entry, expected):
    base = {"slug": '"a"', "title": '"T"', "url": '"https://column.example/a"', "summary": '"S"',
            "keywords": '["k"]', "published": "2026-01-05"}
    given_keys = {line.split(" = ")[0] for line in entry.splitlines()}
    lines = [f"{k} = {v}" for k, v in base.items() if k not in given_keys] + entry.splitlines()
    path = tmp_path / "c.toml"
    path.write_text("[[topic]]\n" + "\n".join(lines) + "\n", encoding="utf-8")

    found, problems = topics.load_catalog(path)

    assert found == []
    assert len(problems) == 1 and problems[0].startswith(f"{path}: topic 1")
    assert expected in problems[0]


def test_themes_and_example_letters_are_stored_and_themes_replace_the_derived_ones(cli, db_path, tmp_path):
    catalog = tmp_path / "c.toml"
    catalog.write_text(
        '[[topic]]\nslug = "money-talks"\ntitle = "Money Talks"\n'
        'url = "https://column.example/topics/money-talks"\nsummary = "Arguing about money at home."\n'
        'keywords = ["money"]\npublished = 2026-01-05\nthemes = ["money", "partner"]\n'
        'examples = ["We fight about the credit card bill every month."]\n', encoding="utf-8")
    folder = tmp_path / "md"
    folder.mkdir()
    (folder / "sleep.md").write_text(
        "---\nslug: night-owl\ntitle: Night Owl\nurl: https://column.example/topics/night-owl\n"
        "summary: Late nights.\nkeywords: [sleep]\npublished: 2026-01-06\nthemes: [sleep, worry]\n---\nBody.\n",
        encoding="utf-8")

    assert cli("topics", "import", str(catalog)).exit_code == 0
    assert cli("topics", "import", str(folder)).exit_code == 0

    stored = {r["slug"]: r for r in rows(db_path, "SELECT slug, themes, examples FROM topics")}
    assert json.loads(stored["money-talks"]["themes"]) == ["money", "partner"]
    assert json.loads(stored["money-talks"]["examples"]) == ["We fight about the credit card bill every month."]
    assert json.loads(stored["night-owl"]["themes"]) == ["sleep", "worry"]
    listed = json.loads(cli("topics", "list", "--json").output)
    assert {t["slug"]: t["themes"] for t in listed} == {"money-talks": ["money", "partner"],
                                                        "night-owl": ["sleep", "worry"]}
    db = open_database(db_path)
    shares = topics.topic_themes(db)["money-talks"]
    assert set(shares) == {"money", "partner"} and shares["money"] == shares["partner"]
    db.close()


def test_a_markdown_topic_with_an_unknown_theme_names_the_file_and_key(tmp_path):
    path = tmp_path / "x.md"
    path.write_text("---\nslug: x\ntitle: X\nurl: https://column.example/x\nsummary: S\n"
                    "keywords: [k]\npublished: 2026-01-06\nthemes: [sleep, slep]\n---\n", encoding="utf-8")

    found, problems = topics.load_catalog(path)

    assert found == []
    assert problems[0].startswith(f"{path} (slug 'x'): key 'themes': unknown theme 'slep'")


def test_topics_without_chosen_themes_get_them_from_their_own_words(catalog_db):
    themed = topics.topic_themes(catalog_db)

    assert themed["start-here-how-this-column-works"]  # no themes key: derived from its text
    assert all(0 < share <= 1 for share in themed["start-here-how-this-column-works"].values())
    assert themed["grief-and-loss"] == {"grief": 1.0}  # chosen in examples/topics.toml


def test_every_theme_file_is_valid_broad_and_sourced():
    themes = topics.load_themes()

    assert len(themes) >= 20
    for theme in themes.values():
        # A narrower theme only needs the words that set its topics apart.
        assert len(theme.phrases) >= (50 if theme.parent else 150), theme.id
        assert theme.parent is None or theme.parent in themes, theme.id
        assert theme.sources and all(s.startswith("http") for s in theme.sources), theme.id
        assert all(p == p.lower() for p in theme.phrases), theme.id
    assert {"worry", "low-mood", "grief", "loneliness", "distress", "partner", "therapy"} <= set(themes)


def test_a_catalog_example_letter_votes_for_its_topic(db):
    plain = topics.Topic("moving-house", "Moving House", "https://column.example/topics/moving-house",
                         "On upheaval.", ("upheaval",), "2026-01-05")
    letter = ("Boxes", "The removal van comes on Friday and half the boxes are still flat-packed in the hall.")
    topics.import_topics(db, [plain], clock=fixed_clock())
    before = topics.match_topics(db, *letter, min_score=0)

    labelled = dataclasses.replace(plain, examples=(
        "The removal van is booked and the boxes are everywhere in the hall.",))
    topics.import_topics(db, [labelled], clock=fixed_clock())
    after = topics.match_topics(db, *letter, min_score=0)

    assert before == []
    assert [m.slug for m in after] == ["moving-house"]


def test_a_slug_used_twice_imports_the_first_and_reports_the_second(tmp_path):
    entry = ('[[topic]]\nslug = "twice"\ntitle = "{}"\nurl = "https://column.example/twice"\n'
             'summary = "S"\nkeywords = []\npublished = 2026-01-05\n')
    path = tmp_path / "c.toml"
    path.write_text(entry.format("First") + entry.format("Second"), encoding="utf-8")

    found, problems = topics.load_catalog(path)

    assert [t.title for t in found] == ["First"]
    assert problems == [f"{path}: topic 2 (slug 'twice'): slug 'twice' is already used by topic 1; "
                        "this one was skipped"]


def test_two_markdown_files_with_one_slug_import_the_first_by_file_name(tmp_path):
    text = (EXAMPLES / "topic.md").read_text(encoding="utf-8")
    (tmp_path / "a.md").write_text(text, encoding="utf-8")
    (tmp_path / "b.md").write_text(text.replace("title: Perfectionism at Home", "title: Copy"), encoding="utf-8")

    found, problems = topics.load_catalog(tmp_path)

    assert [t.title for t in found] == [
        "Perfectionism at Home, or Why the House Is Never Finished"]
    assert problems == [f"{tmp_path / 'b.md'}: slug 'perfectionism-at-home' is already used by a.md; "
                        "this one was skipped"]


def test_a_missing_path_is_an_error_not_an_empty_import(cli, tmp_path):
    result = cli("topics", "import", str(tmp_path / "nope.toml"))

    assert result.exit_code == 1
    assert f"{tmp_path / 'nope.toml'}: no such file or folder" in result.output


# -- listing ----------------------------------------------------------------------------

def test_topics_list_json_is_every_topic_newest_first(cli):
    cli("topics", "import", str(CATALOG))
    cli("topics", "import", str(EXAMPLES / "feed.xml"))

    result = cli("topics", "list", "--json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert len(listed) == 29
    assert [t["slug"] for t in listed[:3]] == ["holiday-stress", "forgiveness", "perfectionism"]
    assert [t["published"] for t in listed] == sorted((t["published"] for t in listed), reverse=True)
    start = next(t for t in listed if t["slug"] == "start-here-how-this-column-works")
    assert start["starter"] is True and "start here" in start["keywords"]
    assert set(start) >= {"slug", "title", "url", "summary", "keywords", "published", "starter"}


def test_topics_list_prints_a_table_marking_starters(cli):
    cli("topics", "import", str(CATALOG))

    result = cli("topics", "list")

    assert result.exit_code == 0, result.output
    start = next(line for line in result.output.splitlines() if "start-here-how-this-column-works" in line)
    assert "starter" in start and "2025-01-06" in start


# -- matching ---------------------------------------------------------------------------

def test_the_example_letter_is_matched_to_the_therapist_topics(cli):
    cli("topics", "import", str(CATALOG))

    result = cli("topics", "match", str(EXAMPLES / "letter.eml"), "--json")

    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["subject"] == "What is a therapist's job? I want you to answer!"
    assert answer["fell_back_to_starters"] is False
    top3 = [t["slug"] for t in answer["topics"]]
    assert len(top3) == 3
    assert {"what-is-a-therapists-job", "finding-a-good-therapist"} <= set(top3)
    scores = [t["score"] for t in answer["topics"]]
    assert scores == sorted(scores, reverse=True)


def test_the_match_table_shows_scores(cli):
    cli("topics", "import", str(CATALOG))

    result = cli("topics", "match", str(EXAMPLES / "letter.eml"))

    assert result.exit_code == 0, result.output
    assert "What is a therapist's job?" in result.output
    assert re.search(r"^1\s+\d+\.\d\d\s+\S+", result.output, re.MULTILINE)


def test_a_letter_about_nothing_the_column_covers_gets_the_starters(cli, tmp_path):
    cli("topics", "import", str(CATALOG))
    eml = write_eml(tmp_path / "parcel.eml", "Parcel", "my parcel was not delivered, refund please")

    result = cli("topics", "match", str(eml), "--json")

    answer = json.loads(result.output)
    assert answer["fell_back_to_starters"] is True
    assert [t["slug"] for t in answer["topics"]] == STARTERS
    table = cli("topics", "match", str(eml))
    assert "these are the column's starter topics" in table.output


def test_a_letter_with_one_clear_topic_gets_it_without_filler_starters(catalog_db):
    # Starters are for letters where nothing fits; a letter that fits one
    # topic gets that topic, not two generic pieces after it.
    found, fell_back = topics.topics_for_letter(
        catalog_db, "I can't sleep", "I wake at 3am every night and lie awake until the alarm.", limit=3)

    assert fell_back is False
    assert found[0].slug == "sleep-problems"
    assert not any(m.starter for m in found)


def test_every_topic_that_fits_relative_to_the_best_is_linked(catalog_db):
    found, fell_back = topics.topics_for_letter(
        catalog_db, "The house is so quiet",
        "My wife died in the spring. Since the funeral I go days without speaking to anyone; "
        "friends stopped calling and the evenings are the worst. I feel so alone.", limit=3)

    slugs = [m.slug for m in found]
    assert fell_back is False
    assert {"grief-and-loss", "loneliness"} <= set(slugs)
    assert all(m.score >= topics.RELATIVE_FIT * found[0].score for m in found)


def test_the_founding_letter_gets_what_is_a_therapists_job_first(catalog_db):
    found, fell_back = topics.topics_for_letter(
        catalog_db, "A question",
        "What is the job of a therapist? To listen? I've had two therapists that just stole my "
        "money. Are they supposed to give advice or just sit there?", limit=3)

    assert fell_back is False
    assert found[0].slug == "what-is-a-therapists-job"
    assert found[0].title == "What Is a Therapist's Job?"


@pytest.mark.parametrize("text, expected", [
    ("Every week she nods, says very little and never tells me what we are working towards. "
     "Should a therapist give advice or set homework?", "what-is-a-therapists-job"),
    ("One woman on the list is a psychotherapist, another a clinical psychologist, and I was "
     "told only a psychiatrist can prescribe. Which one is properly qualified?", "who-is-a-therapist"),
    ("It has been nine months and nothing is changing, I dread going. How do I end it with her "
     "and find someone who is a better fit?", "finding-a-good-therapist"),
    ("Nothing dramatic has happened and others have it worse. Is it worth trying therapy, or "
     "should I just push through?", "considering-therapy"),
    ("The fees near me are ninety pounds a session and my insurance won't cover it. Is there a "
     "sliding scale or a waiting list for something free?", "cost-of-therapy"),
])
def test_letters_about_therapy_get_the_therapy_topic_they_ask_about(catalog_db, text, expected):
    found, fell_back = topics.topics_for_letter(catalog_db, "A question", text, limit=3)

    assert fell_back is False
    assert found[0].slug == expected, [m.slug for m in found]


def test_a_theme_whose_parent_is_not_a_name_is_an_error_naming_the_key():
    from mailer.topics.themes import parse_theme

    with pytest.raises(ValueError, match="themes/narrow.toml: key 'parent'"):
        parse_theme({"id": "narrow", "phrases": ["a phrase"], "parent": ""}, "narrow.toml")


@pytest.mark.parametrize("subject, text, expected", [
    ("Meetings", "My heart races before every meeting and my hands shake; I've started calling in sick "
                 "on the days I have to present.", "anxiety-and-worry"),
    ("Since March", "Since Mum passed away I keep picking up the phone to call her on Sundays, and then "
                    "I remember.", "grief-and-loss"),
    ("Evenings", "It started as one glass of wine after work. Now it's most of a bottle every night and "
                 "I hide the empties.", "addictions"),
], ids=["racing-heart", "mum-passed-away", "hidden-empties"])
def test_a_letter_in_the_readers_own_words_finds_its_topic_through_the_themes(catalog_db, subject, text, expected):
    # None of these says "anxiety", "grief" or "addiction": on words alone the
    # first two score below the floor and would get the starters.
    found, fell_back = topics.topics_for_letter(catalog_db, subject, text, limit=3)

    assert fell_back is False
    assert found[0].slug == expected, [m.slug for m in found]


def test_an_urgent_letter_gets_topics_on_distress_low_mood_loneliness_or_grief_not_starters(catalog_db):
    subject, text = "goodbye", "tonight is the night. goodbye and thank you for your columns"
    ordinary, _ = topics.topics_for_letter(catalog_db, subject, text, limit=3)
    urgent, _ = topics.topics_for_letter(catalog_db, subject, text, limit=3, urgent=True)

    themed = topics.topic_themes(catalog_db)
    assert len(urgent) == 3
    assert not any(m.starter for m in urgent)
    assert all(set(themed[m.slug]) & set(topics.URGENT_THEMES) for m in urgent), [m.slug for m in urgent]
    assert {m.slug for m in urgent} != {m.slug for m in ordinary}


def test_match_topics_returns_only_good_matches(catalog_db):
    good = topics.match_topics(catalog_db, "Grief", "My dog died last week and the house is empty.")
    everything = topics.match_topics(catalog_db, "Grief", "My dog died last week and the house is empty.",
                                     limit=10, min_score=0)

    assert good and good[0].slug == "grief-and-loss"
    assert all(m.score >= topics.MIN_SCORE for m in good)
    assert len(everything) >= len(good)
    assert topics.match_topics(catalog_db, "", "") == []


def test_quoted_text_of_our_acknowledgement_is_not_matched_again(catalog_db):
    reply = ("Thank you, I will read those.\n\n"
             "On Tue, 10 Nov 2026 at 21:20, Enjoy Your Changes <letters@column.example> wrote:\n"
             "> While you wait, these pieces may speak to what you wrote:\n"
             "> * Alcohol, Gambling, Phones: Loosening the Grip\n"
             "> * Grief Has No Schedule\n")

    assert topics.letter_terms("Re: thanks", reply).keys() <= {"read", "thanks"}
    found, fell_back = topics.topics_for_letter(catalog_db, "Re: thanks", reply)
    assert fell_back is True


def test_a_column_without_topics_or_starters_links_nothing(db):
    assert topics.topics_for_letter(db, "Help", "I am so lonely since the move.") == ([], True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=st.text(max_size=80), text=st.text(max_size=600))
def test_any_letter_text_is_matched_without_error(catalog_db, subject, text):
    found, fell_back = topics.topics_for_letter(catalog_db, subject, text + ' "NEAR( AND OR * ^ -', limit=3)

    assert 1 <= len(found) <= 3
    assert len({m.slug for m in found}) == len(found)
    if fell_back:
        assert [m.slug for m in found] == STARTERS
    else:
        assert all(m.score >= topics.RELATIVE_FIT * found[0].score for m in found)


def test_matching_follows_a_topic_imported_after_the_first_match(catalog_db):
    letter = ("Crossroads", "I cannot decide whether to take the job abroad; the indecision is eating me.")
    before, _ = topics.topics_for_letter(catalog_db, *letter)
    feed, _ = topics.load_catalog(EXAMPLES / "feed.xml")
    topics.import_topics(catalog_db, feed, clock=fixed_clock())

    after, fell_back = topics.topics_for_letter(catalog_db, *letter)

    assert "making-hard-decisions" not in [m.slug for m in before]
    assert after[0].slug == "making-hard-decisions" and not fell_back


# -- the weekly digest's question -------------------------------------------------------

def test_topics_published_since_a_date_are_newer_ones_newest_first(catalog_db):
    assert [t["slug"] for t in topics.topics_published_since(catalog_db, "2026-08-10")] == [
        "forgiveness"]
    assert [t["slug"] for t in topics.topics_published_since(catalog_db, "2026-05-03")] == [
        "forgiveness", "jealousy", "changing-habits"]
    assert topics.topics_published_since(catalog_db, "2026-12-01") == []
    assert len(topics.topics_published_since(catalog_db, None)) == 26


def test_topics_published_since_a_moment_count_same_day_pieces_imported_after_it(db):
    def topic(slug, published):
        return topics.Topic(slug, slug.title(), f"https://column.example/{slug}", "S", (), published)

    early = dt.datetime(2026, 11, 16, 8, 0, tzinfo=dt.timezone.utc)
    topics.import_topics(db, [topic("before-the-digest", "2026-11-16"), topic("older", "2026-11-09")],
                         clock=fixed_clock(early))
    last_digest = "2026-11-16T09:00:00+00:00"
    topics.import_topics(db, [topic("after-the-digest", "2026-11-16"), topic("late-backfill", "2026-11-02"),
                              topic("next-day", "2026-11-17")],
                         clock=fixed_clock(early + dt.timedelta(hours=3)))

    since = topics.topics_published_since(db, last_digest)

    assert [t["slug"] for t in since] == ["next-day", "after-the-digest"]
    # The same moment written in another zone means the same thing.
    assert topics.topics_published_since(db, "2026-11-16T04:00:00-05:00") == since
    with pytest.raises(ValueError, match="since: expected an ISO date or datetime"):
        topics.topics_published_since(db, "last monday")


# -- the pieces underneath --------------------------------------------------------------

def test_the_stemmer_agrees_with_sqlites_porter_tokenizer():
    sources = [CATALOG, EXAMPLES / "topic.md", REPO / "bench" / "data" / "relevance_letters.toml",
               REPO / "mailer" / "data" / "synonyms.toml",
               *sorted((REPO / "mailer" / "data" / "themes").glob("*.toml"))]
    lines = [line for p in sources for line in p.read_text(encoding="utf-8").splitlines()]
    words = sorted({word for line in lines for word in matching._tokens(line)} | {
        "caresses", "ponies", "agreed", "hopping", "filing", "conditional", "digitizer",
        "vietnamization", "callousness", "sensibiliti", "electriciti", "adoption", "controll",
        "generalizations", "oscillators", "aing", "sss", "ies"})
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(a, tokenize='porter unicode61 remove_diacritics 2')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
    conn.executemany("INSERT INTO t (rowid, a) VALUES (?, ?)", enumerate(words))
    sqlite_stems = dict(conn.execute("SELECT doc, term FROM v"))

    disagree = [(w, sqlite_stems[i], stemmer._stem(w)) for i, w in enumerate(words)
                if sqlite_stems[i] != stemmer._stem(w)]

    assert len(words) > 900
    assert disagree == []


def test_every_column_phrase_in_the_synonyms_file_finds_a_topic(catalog_db):
    data = tomllib.loads((REPO / "mailer" / "data" / "synonyms.toml").read_text(encoding="utf-8"))
    feed, _ = topics.load_catalog(EXAMPLES / "feed.xml")
    md, _ = topics.load_catalog(EXAMPLES / "topic.md")
    topics.import_topics(catalog_db, feed + md, clock=fixed_clock())

    orphans = [phrase for phrase in data["synonyms"]
               if not catalog_db.execute("SELECT count(*) FROM topics_fts WHERE topics_fts MATCH ?",
                                         ['"' + " ".join(matching._tokens(phrase)) + '"']).fetchone()[0]]

    assert orphans == []


def test_the_topics_schema_is_migration_2(db):
    assert db.execute("SELECT name FROM schema_migrations WHERE version = 2").fetchone()[0] == (
        "topics: catalog and full-text index")
    assert {"topics_ai", "topics_ad", "topics_au"} <= {t.name for t in db["topics"].triggers}
    assert "porter unicode61" in db["topics_fts"].schema


@pytest.mark.parametrize("command", [["topics"], ["topics", "import"], ["topics", "list"],
                                     ["topics", "match"]], ids=" ".join)
def test_every_topics_command_has_help_text(command):
    result = CliRunner().invoke(main, [*command, "--help"])

    assert result.exit_code == 0, result.output
    assert len(result.output.split("\n\n")[1].strip()) > 10


def test_if_empty_seeds_a_new_archive_once_and_leaves_an_existing_catalog_alone(cli, db_path, tmp_path):
    # `make run` calls this on every start: the first seeds, later ones change nothing.
    first = cli("topics", "import", "--if-empty", str(EXAMPLES / "topics.toml"))
    assert first.exit_code == 0 and "26 added" in first.output
    renamed = tmp_path / "one.toml"
    renamed.write_text(
        '[[topic]]\nslug = "what-is-a-therapists-job"\ntitle = "Changed"\n'
        'url = "https://column.example/x"\nsummary = "s"\nkeywords = ["k"]\npublished = 2026-01-01\n'
    )
    second = cli("topics", "import", "--if-empty", str(renamed))
    assert second.exit_code == 0 and "nothing to do" in second.output
    titles = {r["slug"]: r["title"] for r in rows(db_path, "SELECT slug, title FROM topics")}
    assert titles["what-is-a-therapists-job"] == "What Is a Therapist's Job?"
