"""Keep: retries are not stored twice, threads hold together, search finds letters,
and the schema moves forward by itself.

Threading and search are archive logic, so most tests here call the archive
on a temporary SQLite file with an explicit clock; retries go through the
real listener, because the retry is something a sending server does.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from conftest import letter, rows, send
from mailer import archive, migrations
from mailer.archive import Envelope, SearchSyntaxError, store_inbound
from mailer.cli import main
from mailer.db import open_database, schema_version

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def db(tmp_path):
    """A fresh, migrated archive file."""
    database = open_database(tmp_path / "archive.db")
    yield database
    database.close()


def receive(db, raw: bytes, *, at: dt.datetime = NOW, kind: str = "letter",
            mail_from: str = "dana@example.org") -> archive.Stored:
    """Archive ``raw`` as the listener would, at time ``at``."""
    return store_inbound(db, raw, Envelope(mail_from, ("letters@column.example",)),
                         kind=kind, clock=lambda: at)


def inbound(db_path: Path) -> list:
    return rows(db_path, "SELECT id, message_id, raw_sha256 FROM messages "
                         "WHERE direction = 'inbound' ORDER BY id")


# -- a sending server that retries ---------------------------------------------------


def test_retry_of_the_same_letter_is_archived_once(service, config):
    raw = letter("Retrying", message_id="<retry.1@example.org>")

    first = send(service.smtp_port, raw)
    second = send(service.smtp_port, raw)

    assert first[0] == second[0] == 250
    # The retry is told the same archive id: it is the same letter.
    assert re.search(rb"queued as (\d+)", first[1]).group(1) == re.search(rb"queued as (\d+)", second[1]).group(1)
    assert [r["message_id"] for r in inbound(config.storage.database)] == ["<retry.1@example.org>"]


def test_same_message_id_with_different_bytes_is_archived_twice(service, config):
    first = letter("Same id", "First version.\r\n", message_id="<reused.1@example.org>")
    second = letter("Same id", "Second, edited version.\r\n", message_id="<reused.1@example.org>")

    assert send(service.smtp_port, first)[0] == 250
    assert send(service.smtp_port, second)[0] == 250

    stored = inbound(config.storage.database)
    assert [r["message_id"] for r in stored] == ["<reused.1@example.org>"] * 2
    assert stored[0]["raw_sha256"] != stored[1]["raw_sha256"]


# -- threads ------------------------------------------------------------------------


def test_reply_with_in_reply_to_joins_the_letters_thread(db):
    first = receive(db, letter("Sleep", message_id="<sleep.1@example.org>"))
    reply = receive(db, letter("Re: Sleep", "Thanks, more detail.\r\n", message_id="<sleep.2@example.org>",
                               extra_headers="In-Reply-To: <sleep.1@example.org>"),
                    at=NOW + dt.timedelta(days=2))

    assert reply.thread_id == first.thread_id
    thread = archive.get_thread(db, first.thread_id)
    assert thread["message_count"] == 2
    assert thread["last_message_at"] == (NOW + dt.timedelta(days=2)).isoformat()


def test_reply_with_only_references_joins_the_thread(db):
    first = receive(db, letter("Grief", message_id="<grief.1@example.org>"))
    reply = receive(db, letter("Re: Grief", message_id="<grief.2@example.org>",
                               extra_headers="References: <elsewhere@example.org> <grief.1@example.org>"))
    assert reply.thread_id == first.thread_id


def test_reply_that_lost_its_headers_joins_by_subject_from_the_same_reader(db):
    first = receive(db, letter("My sister's wedding"))
    reply = receive(db, letter("RE:  my sister's   wedding"), at=NOW + dt.timedelta(days=30))
    assert reply.thread_id == first.thread_id


def test_same_subject_from_another_reader_starts_its_own_thread(db):
    first = receive(db, letter("Re: Loneliness"))
    stranger = receive(db, letter("Re: Loneliness", sender="Other <other@example.org>"),
                       mail_from="other@example.org")
    assert stranger.thread_id != first.thread_id


def test_subject_match_without_reply_prefix_is_a_new_letter(db):
    # Two letters both titled "Help" are two questions, not one thread.
    first = receive(db, letter("Help"))
    second = receive(db, letter("Help"), at=NOW + dt.timedelta(days=1))
    assert second.thread_id != first.thread_id


def test_new_letter_with_a_different_subject_starts_a_new_thread(db):
    first = receive(db, letter("Sleep", message_id="<a@example.org>"))
    second = receive(db, letter("Work", message_id="<b@example.org>"))
    assert second.thread_id != first.thread_id
    assert [t["subject"] for t in archive.list_threads(db)] == ["Work", "Sleep"]


def test_subject_fallback_forgets_threads_older_than_its_window(db):
    first = receive(db, letter("Moving"))
    late = NOW + dt.timedelta(days=archive.SUBJECT_FALLBACK_DAYS + 1)
    reply = receive(db, letter("Re: Moving"), at=late)
    assert reply.thread_id != first.thread_id


@pytest.mark.parametrize("status", ["answered", "archived"])
def test_reader_writing_to_a_closed_thread_puts_it_back_to_new(db, status):
    first = receive(db, letter("Anger", message_id="<anger.1@example.org>"))
    with db.atomic():  # what the columnist's answer (or archiving) leaves behind
        db.execute("UPDATE threads SET status = ? WHERE id = ?", [status, first.thread_id])

    receive(db, letter("Re: Anger", message_id="<anger.2@example.org>",
                       extra_headers="In-Reply-To: <anger.1@example.org>"), at=NOW + dt.timedelta(days=3))

    assert archive.get_thread(db, first.thread_id)["status"] == "new"


def test_delivery_report_does_not_reopen_an_answered_thread(db):
    first = receive(db, letter("Anger", message_id="<anger.1@example.org>"))
    with db.atomic():
        db.execute("UPDATE threads SET status = 'answered' WHERE id = ?", [first.thread_id])

    receive(db, letter("Undeliverable: Re: Anger", message_id="<dsn.1@mx.example.net>",
                       extra_headers="In-Reply-To: <anger.1@example.org>"), kind="bounce")

    assert archive.get_thread(db, first.thread_id)["status"] == "answered"


# -- search -------------------------------------------------------------------------


def test_search_finds_a_letter_by_a_word_in_its_body(db):
    wanted = receive(db, letter("Nights", "I lie awake with insomnia every night.\r\n"))
    receive(db, letter("Days", "My days are fine.\r\n"))

    found = archive.search(db, "insomnia")

    assert [r["id"] for r in found] == [wanted.message_id]
    assert "[insomnia]" in found[0]["snippet"]


def test_search_matches_other_forms_of_a_word(db):
    wanted = receive(db, letter("Advice", "Should I see a therapist about this?\r\n"))

    assert [r["id"] for r in archive.search(db, "therapists")] == [wanted.message_id]


def test_search_finds_accented_words_without_accents(db):
    wanted = receive(db, letter("Soeur", "Je me sens découragée.\r\n"))
    assert [r["id"] for r in archive.search(db, "decouragee")] == [wanted.message_id]


BAD_QUERIES = ['"I feel', "sleep AND", "(sleep", "nosuchfield:sleep", "*", "NEAR(sleep work, x)"]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_search_the_index_cannot_parse_raises_a_readable_error(db, query):
    receive(db, letter("Sleep", "I cannot sleep.\r\n"))
    with pytest.raises(SearchSyntaxError) as caught:
        archive.search(db, query)
    message = str(caught.value)
    assert message.startswith(f"cannot search for {query!r}")
    assert "double quotes" in message


def test_empty_search_is_refused_with_a_readable_error(db):
    with pytest.raises(SearchSyntaxError, match="the search is empty"):
        archive.search(db, "   ")


@pytest.fixture
def cli_config(tmp_path, db):
    """A config file whose storage.database is the test's archive."""
    receive(db, letter("Sleep", "I cannot sleep since my father died.\r\n"))
    path = tmp_path / "cli.toml"
    path.write_text(f'[storage]\ndatabase = "{tmp_path / "archive.db"}"\n\n[web]\nenabled = false\n',
                    encoding="utf-8")
    return path


def test_cli_search_lists_the_matching_letter(cli_config):
    result = CliRunner().invoke(main, ["--config", str(cli_config), "threads", "search", "father"])
    assert result.exit_code == 0, result.output
    assert "Sleep" in result.output and "[father]" in result.output


def test_cli_search_turns_a_bad_query_into_a_clean_error(cli_config):
    result = CliRunner().invoke(main, ["--config", str(cli_config), "threads", "search", '"I feel'])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # click's error exit, not a crash
    assert "Error: cannot search for" in result.output
    assert "Traceback" not in result.output


# -- the schema -------------------------------------------------------------------------


def _recorded_versions(path: Path) -> list[int]:
    return [r["version"] for r in rows(path, "SELECT version FROM schema_migrations ORDER BY version")]


def test_fresh_database_records_every_migration(tmp_path):
    path = tmp_path / "fresh.db"
    open_database(path).close()

    assert _recorded_versions(path) == [v for v, _, _ in migrations.MIGRATIONS]


def test_opening_a_database_twice_applies_nothing_new(tmp_path):
    path = tmp_path / "twice.db"
    open_database(path).close()
    before = [tuple(r) for r in rows(path, "SELECT * FROM schema_migrations")]

    again = open_database(path, migrate=False)
    try:
        assert migrations.migrate(again) == []
        assert schema_version(again) == migrations.MIGRATIONS[-1][0]
    finally:
        again.close()
    open_database(path).close()
    assert [tuple(r) for r in rows(path, "SELECT * FROM schema_migrations")] == before


def test_database_from_an_older_release_is_brought_forward(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    # What release 1 left behind: migration 1 only, and a letter in it.
    old = sqlite_utils.Database(path)
    version, name, first_migration = migrations.MIGRATIONS[0]
    old.execute("CREATE TABLE schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    with old.atomic():
        first_migration(old)
        old.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, NOW.isoformat()])
    with old.atomic():
        old.execute("INSERT INTO threads (id, subject, created_at, last_message_at, message_count) "
                    "VALUES (1, 'Old letter', ?, ?, 1)", [NOW.isoformat(), NOW.isoformat()])
        old.execute("INSERT INTO messages (id, thread_id, direction, kind, created_at, subject, "
                    "body_text, raw_sha256) VALUES (1, 1, 'inbound', 'letter', ?, 'Old letter', "
                    "'kept from the first release', 'x')", [NOW.isoformat()])
        old.execute("INSERT INTO raw_messages (id, raw) VALUES (1, x'4869')")
    old.close()

    # A newer release: today's migrations, plus one more so the step is never empty.
    def later_feature(db):
        db.execute("CREATE TABLE later_feature (id INTEGER PRIMARY KEY)")

    newest = migrations.MIGRATIONS[-1][0] + 1
    monkeypatch.setattr(migrations, "MIGRATIONS",
                        migrations.MIGRATIONS + [(newest, "later feature", later_feature)])
    db = open_database(path)
    try:
        assert schema_version(db) == newest
        assert "later_feature" in db.table_names()
        assert archive.raw_bytes(db, 1) == b"Hi"
        assert [r["id"] for r in archive.search(db, "release")] == [1]
    finally:
        db.close()
    assert _recorded_versions(path) == [v for v, _, _ in migrations.MIGRATIONS]
