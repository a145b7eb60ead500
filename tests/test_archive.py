"""Keep: retries are not stored twice, threads hold together, search finds letters,
and the schema moves forward by itself.

Threading and search are archive logic, so most tests here call the archive
on a temporary SQLite file with an explicit clock; retries go through the
real listener, because the retry is something a sending server does.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from conftest import letter, rows, send, wait_filed
from mailer.store import archive, migrations
from mailer import desk
from mailer.store.archive import Envelope, SearchSyntaxError, store_inbound
from mailer.cli import main
from mailer.store.db import open_database, schema_version

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
    wait_filed(db_path)
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


def test_a_word_in_more_letters_than_are_ranked_ranks_the_newest(db):
    oldest = receive(db, letter("Insomnia", "insomnia insomnia insomnia insomnia\r\n"))
    newer = [receive(db, letter("Nights", f"Some insomnia, night {n}.\r\n"), at=NOW + dt.timedelta(days=n))
             for n in (1, 2)]

    capped = archive.search(db, "insomnia", rank_newest=2)
    everything = archive.search(db, "insomnia", rank_newest=3)

    # The oldest letter is the best match, but only the newest two were ranked, and the result says so.
    assert capped.ranked_newest == 2
    assert sorted(r["id"] for r in capped) == sorted(s.message_id for s in newer)
    assert everything.ranked_newest is None
    assert everything[0]["id"] == oldest.message_id and len(everything) == 3


def test_search_rows_carry_the_thread_and_the_marks_asked_for(db):
    stored = receive(db, letter("Sleep and work", "I cannot sleep before work.\r\n"))

    [row] = archive.search(db, "sleep", marks=("<<", ">>"), snippet_words=5)

    assert row["thread_id"] == stored.thread_id and row["status"] == "new" and row["urgent"] == 0
    assert row["subject_marked"] == "<<Sleep>> and work"
    assert "<<sleep>>" in row["snippet"]


def test_desk_search_reads_an_address_literally(db):
    wanted = receive(db, letter("Hello", "Nothing special.\r\n"))
    receive(db, letter("Other", sender="Sam <sam@example.net>"), mail_from="sam@example.net")

    result = desk.search(db, "dana@example.org")

    assert result.literal and result.query == '"dana@example.org"'
    assert [r["id"] for r in result.rows] == [wanted.message_id]


def test_desk_search_reads_a_word_with_an_apostrophe_literally(db):
    wanted = receive(db, letter("Mother", "My mother's house is too quiet.\r\n"))

    result = desk.search(db, "mother's")

    assert result.literal and [r["id"] for r in result.rows] == [wanted.message_id]
    assert ("mother's", True) in result.rows[0]["parts"]


def test_desk_search_does_not_guess_when_the_query_uses_operators(db):
    receive(db, letter("Money", "Money is tight.\r\n"))
    with pytest.raises(SearchSyntaxError, match="the brackets do not pair up"):
        desk.search(db, "money AND (")


def test_desk_search_of_plain_words_is_not_literal(db):
    receive(db, letter("Sleep", "I cannot sleep.\r\n"))
    result = desk.search(db, "sleep")
    assert not result.literal and result.ranked_newest is None
    assert [text for text, hit in result.rows[0]["parts"] if hit] == ["sleep"]


def test_cli_search_says_when_only_the_newest_matches_were_ranked(cli_config, monkeypatch):
    ranked = archive.search
    monkeypatch.setattr(archive, "search", lambda db, query, **options: ranked(db, query, **options, rank_newest=1))
    with open_database(cli_config.parent / "archive.db") as db:
        receive(db, letter("Grief", "Since my father died I cannot work.\r\n"), at=NOW + dt.timedelta(days=1))

    result = CliRunner().invoke(main, ["--config", str(cli_config), "threads", "search", "father"])

    assert result.exit_code == 0, result.output
    assert "more than 1 messages match: the best of the newest 1 are shown" in result.output
    assert result.output.count("[father]") == 1


# -- the desk's inbox: only threads a reader wrote in ----------------------------------


def confirm(db, to: str = "kim@example.org", *, at: dt.datetime = NOW, message_id: str = "<confirm.1@column.example>"):
    """Archive a subscription confirmation the column sent: a thread with no letter in it."""
    raw = letter("Please confirm", "Reply to confirm.\r\n", sender="Column <letters@column.example>", to=to,
                 message_id=message_id)
    return archive.store_outbound(db, raw, kind="confirmation", mail_from="letters@column.example",
                                  rcpt_to=[to], clock=lambda: at)


def has_letter(db, thread_id: int) -> int:
    return db.execute("SELECT has_letter FROM threads WHERE id = ?", [thread_id]).fetchone()[0]


def test_a_thread_with_only_a_confirmation_or_a_subscribe_request_is_not_on_the_desk(db):
    confirmation = confirm(db)
    request = receive(db, letter("subscribe", "", sender="kim@example.org"), kind="subscribe",
                      mail_from="kim@example.org", at=NOW + dt.timedelta(minutes=1))
    reader = receive(db, letter("Sleep"), at=NOW + dt.timedelta(minutes=2))

    assert (has_letter(db, confirmation.thread_id), has_letter(db, request.thread_id)) == (0, 0)
    assert [t["id"] for t in desk.inbox(db)] == [reader.thread_id]
    assert {t["id"] for t in desk.inbox(db, view="all")} == {
        confirmation.thread_id, request.thread_id, reader.thread_id}
    counts = desk.view_counts(db)
    assert (counts["new"], counts["inbox"], counts["all"]) == (1, 1, 3)
    assert archive.thread_counts(db)["new"] == 3


def test_a_thread_joins_the_desk_when_a_reader_writes_a_letter_in_it(db):
    confirmation = confirm(db)
    answer = receive(db, letter("Re: Please confirm", "Yes please. And a question about sleep.\r\n",
                                sender="Kim <kim@example.org>",
                                extra_headers="In-Reply-To: <confirm.1@column.example>"),
                     mail_from="kim@example.org", at=NOW + dt.timedelta(hours=1))

    assert answer.thread_id == confirmation.thread_id
    assert has_letter(db, confirmation.thread_id) == 1
    [listed] = desk.inbox(db)
    assert listed["id"] == confirmation.thread_id
    assert listed["reader_name"] == "Kim" and listed["preview"].startswith("Yes please.")


def test_a_bounce_does_not_put_a_thread_on_the_desk(db):
    confirmation = confirm(db)
    receive(db, letter("Undeliverable: Please confirm", sender="MAILER-DAEMON@mx.example.net",
                       extra_headers="In-Reply-To: <confirm.1@column.example>"),
            kind="bounce", mail_from="")
    assert has_letter(db, confirmation.thread_id) == 0
    assert desk.inbox(db) == []


def test_a_strangers_reply_to_someone_elses_message_starts_its_own_thread(db):
    confirmation = confirm(db)
    sam = receive(db, letter("Re: Please confirm", "Sam here, writing in Kim's thread.\r\n",
                             sender="Sam <sam@example.net>", extra_headers="In-Reply-To: <confirm.1@column.example>"),
                  mail_from="sam@example.net")
    assert sam.thread_id != confirmation.thread_id
    assert has_letter(db, confirmation.thread_id) == 0
    assert archive.get_thread(db, sam.thread_id)["correspondent"] == "sam@example.net"


def test_forgetting_the_only_letter_of_a_thread_takes_it_off_the_desk(db):
    confirmation = confirm(db)
    sam = receive(db, letter("Re: Please confirm", "Sam here, writing in Kim's thread.\r\n",
                             sender="Sam <sam@example.net>", extra_headers="In-Reply-To: <confirm.1@column.example>"),
                  mail_from="sam@example.net")
    # Archives written before strangers were kept out of other threads can hold such a letter.
    with db.atomic():
        db.execute("UPDATE messages SET thread_id = ? WHERE id = ?", [confirmation.thread_id, sam.message_id])
        db.execute("UPDATE threads SET has_letter = 1, message_count = 2 WHERE id = ?", [confirmation.thread_id])
        db.execute("DELETE FROM threads WHERE id = ?", [sam.thread_id])
    assert has_letter(db, confirmation.thread_id) == 1

    desk.forget(db, "sam@example.net")

    assert archive.get_thread(db, confirmation.thread_id)["message_count"] == 1
    assert has_letter(db, confirmation.thread_id) == 0
    assert desk.inbox(db) == []


def test_an_archived_urgent_thread_is_filed_with_the_archived_ones(db):
    urgent = receive(db, letter("Crisis", message_id="<c@example.org>"))
    calm = receive(db, letter("Calm", message_id="<calm@example.org>"), at=NOW + dt.timedelta(days=1))
    with db.atomic():
        db.execute("UPDATE threads SET urgent = 1, status = 'archived' WHERE id = ?", [urgent.thread_id])
        db.execute("UPDATE threads SET status = 'archived' WHERE id = ?", [calm.thread_id])
    newest = receive(db, letter("New one"), at=NOW + dt.timedelta(days=2))

    assert [t["id"] for t in desk.inbox(db, view="all")] == [newest.thread_id, calm.thread_id, urgent.thread_id]
    assert desk.view_counts(db)["urgent"] == 0


#: The inbox order, written the obvious (slow) way: what list_threads must return, page by page.
REFERENCE_ORDER = (
    " ORDER BY (urgent = 1 AND status != 'archived') DESC,"
    " CASE status WHEN 'new' THEN 0 WHEN 'answered' THEN 1 ELSE 2 END, last_message_at DESC, id DESC"
)


def reference(db, *, status, urgent, since, open_only, letters_only, limit, offset) -> list[int]:
    where, params = ["1"], []
    if status:
        where.append("status = ?")
        params.append(status)
    if urgent is not None:
        where.append("urgent = 1" if urgent else "urgent != 1")
    if since:
        where.append("last_message_at >= ?")
        params.append(since)
    if open_only:
        where.append("status != 'archived'")
    if letters_only:
        where.append("has_letter = 1")
    sql = f"SELECT id FROM threads WHERE {' AND '.join(where)}{REFERENCE_ORDER} LIMIT ? OFFSET ?"
    return [r[0] for r in db.execute(sql, params + [limit, offset])]


@pytest.fixture
def many_threads(db):
    """90 threads of every status, urgency and kind, with ties in last_message_at."""
    rng = random.Random(6)
    with db.atomic():
        for n in range(90):
            when = (NOW - dt.timedelta(hours=rng.randrange(40))).isoformat()
            db.execute(
                "INSERT INTO threads (subject, status, urgent, has_letter, created_at, last_message_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [f"thread {n}", rng.choice(archive.THREAD_STATUSES), rng.choice([0, 0, 0, 1, 2]),
                 rng.choice([0, 1, 1]), when, when],
            )
    return db


def test_every_page_of_every_filter_is_in_the_inbox_order(many_threads):
    db = many_threads
    since = (NOW - dt.timedelta(hours=20)).isoformat()
    checked = 0
    for status in (None, *archive.THREAD_STATUSES):
        for urgent in (None, True, False):
            for open_only in (False, True):
                for letters_only in (False, True):
                    for when in (None, since):
                        for limit, offset in ((5, 0), (5, 3), (10, 17), (100, 0), (7, 40), (3, 200)):
                            options = dict(status=status, urgent=urgent, since=when, open_only=open_only,
                                           letters_only=letters_only, limit=limit, offset=offset)
                            got = [t["id"] for t in archive.list_threads(db, **options)]
                            assert got == reference(db, **options), options
                            checked += 1
    assert checked == 4 * 3 * 2 * 2 * 2 * 6


def test_counts_agree_with_the_listing(many_threads):
    db = many_threads
    for letters_only in (False, True):
        counts = archive.thread_counts(db, letters_only=letters_only)
        for status in archive.THREAD_STATUSES:
            assert counts[status] == len(archive.list_threads(db, status=status, letters_only=letters_only,
                                                              limit=-1))
        urgent = archive.list_threads(db, urgent=True, open_only=True, letters_only=letters_only, limit=-1)
        assert counts["urgent"] == len(urgent)
        assert counts["waiting"] == sum(t["status"] == "new" for t in urgent)
        assert counts["all"] == 90


def recount(db, letters_only: bool) -> dict[str, int]:
    """thread_counts the slow way, straight from the threads table."""
    def n(where: str) -> int:
        return db.execute(f"SELECT count(*) FROM threads WHERE {where}"
                          + (" AND has_letter = 1" if letters_only else "")).fetchone()[0]
    counts = {status: n(f"status = '{status}'") for status in archive.THREAD_STATUSES}
    counts["urgent"] = n("urgent = 1 AND status != 'archived'")
    counts["waiting"] = n("urgent = 1 AND status = 'new'")
    counts["all"] = db.execute("SELECT count(*) FROM threads").fetchone()[0]
    return counts


def test_the_counts_keep_up_with_every_change_to_a_thread(many_threads):
    db = many_threads
    rng = random.Random(7)
    for step in range(300):
        thread_id = rng.choice([r[0] for r in db.execute("SELECT id FROM threads")])
        change = rng.choice(["status", "urgent", "has_letter", "delete", "insert", "touch"])
        with db.atomic():
            if change == "status":
                db.execute("UPDATE threads SET status = ? WHERE id = ?", [rng.choice(archive.THREAD_STATUSES), thread_id])
            elif change == "urgent":
                db.execute("UPDATE threads SET urgent = ? WHERE id = ?", [rng.choice([0, 1, 2]), thread_id])
            elif change == "has_letter":
                db.execute("UPDATE threads SET has_letter = 1 - has_letter WHERE id = ?", [thread_id])
            elif change == "delete":
                db.execute("DELETE FROM threads WHERE id = ?", [thread_id])
            elif change == "insert":
                db.execute("INSERT INTO threads (subject, status, urgent, has_letter, created_at, last_message_at) "
                           "VALUES ('more', ?, ?, ?, ?, ?)", [rng.choice(archive.THREAD_STATUSES),
                           rng.choice([0, 1]), rng.choice([0, 1]), NOW.isoformat(), NOW.isoformat()])
            else:  # what _touch_thread does when a letter arrives
                db.execute("UPDATE threads SET message_count = message_count + 1, status = 'new', has_letter = 1 "
                           "WHERE id = ?", [thread_id])
        for letters_only in (False, True):
            assert archive.thread_counts(db, letters_only=letters_only) == recount(db, letters_only), (step, change)


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


def test_migration_5_marks_the_threads_a_reader_wrote_in(tmp_path):
    path = tmp_path / "release4.db"
    old = sqlite_utils.Database(path)
    old.execute("CREATE TABLE schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for version, name, step in migrations.MIGRATIONS:
        if version < 5:
            step(old)
            old.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, NOW.isoformat()])
    # Thread 1: a letter; 2: only a confirmation; 3: only a subscribe request; 4: a bounce, then a letter.
    messages = [(1, "inbound", "letter"), (2, "outbound", "confirmation"), (3, "inbound", "subscribe"),
                (4, "inbound", "bounce"), (4, "inbound", "letter")]
    with old.atomic():
        for thread_id in (1, 2, 3, 4):
            old.execute("INSERT INTO threads (id, subject, created_at, last_message_at) VALUES (?, ?, ?, ?)",
                        [thread_id, f"thread {thread_id}", NOW.isoformat(), NOW.isoformat()])
        for thread_id, direction, kind in messages:
            old.execute("INSERT INTO messages (thread_id, direction, kind, created_at, raw_sha256) "
                        "VALUES (?, ?, ?, ?, 'x')", [thread_id, direction, kind, NOW.isoformat()])
    old.close()

    db = open_database(path)
    try:
        assert schema_version(db) >= 5
        flags = dict(db.execute("SELECT id, has_letter FROM threads ORDER BY id").fetchall())
        assert flags == {1: 1, 2: 0, 3: 0, 4: 1}
        assert {t["id"] for t in desk.inbox(db)} == {1, 4}
        assert {t["id"] for t in desk.inbox(db, view="all")} == {1, 2, 3, 4}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"threads_letters", "threads_by_status", "threads_urgent"} <= indexes
        assert "threads_inbox" not in indexes
        assert desk.view_counts(db) == {"new": 2, "answered": 0, "archived": 0, "urgent": 0, "waiting": 0,
                                        "all": 4, "inbox": 2}
    finally:
        db.close()


def test_a_transaction_holds_the_write_lock_from_its_start_so_it_cannot_be_refused_half_way(tmp_path):
    # The CLI, the digest and `mailer serve` write the same file. A deferred
    # transaction that reads first and writes later fails with "database is
    # locked" (no waiting) when another process commits in between; one that
    # takes the lock at BEGIN makes the others wait instead.
    import sqlite3

    from mailer.store.db import open_database

    path = tmp_path / "mailer.db"
    ours = open_database(path)
    other = sqlite3.connect(str(path), timeout=0, isolation_level=None)
    try:
        with ours.atomic():
            ours.execute("SELECT count(*) FROM messages").fetchall()  # a read first, as enqueue does
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # another writer must wait for us...
            ours.execute("CREATE TABLE scratch (x)")  # ...so our own write goes through
        other.execute("BEGIN IMMEDIATE")  # and once we commit, it may write
        other.execute("ROLLBACK")
    finally:
        other.close()
        ours.close()


def test_the_index_follows_a_changed_subject_or_body_and_ignores_other_columns(db):
    stored = receive(db, letter("Grief after my father died", "Dear column,\r\nI miss him.\r\n",
                                message_id="<grief@example.org>"))
    segments = db.execute("SELECT count(*), sum(length(block)) FROM messages_fts_data").fetchone()
    with db.atomic():
        db.execute("UPDATE messages SET processed_at = ?, disposition = 'acknowledged', meta = '{\"x\": 1}' "
                   "WHERE id = ?", ["2026-11-26T09:00:01+00:00", stored.message_id])
    # Marking a letter processed does not write to the full-text index.
    assert db.execute("SELECT count(*), sum(length(block)) FROM messages_fts_data").fetchone() == segments
    assert [r[0] for r in db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'father'")] == [
        stored.message_id]
    with db.atomic():
        db.execute("UPDATE messages SET subject = 'Loss', body_text = 'Dear column, it is hard.' WHERE id = ?",
                   [stored.message_id])
    assert db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'father OR miss'").fetchall() == []
    assert [r[0] for r in db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'loss'")] == [
        stored.message_id]


def test_the_writer_waits_for_another_process_holding_the_write_lock_and_then_commits(tmp_path):
    # The pipeline worker and `mailer` commands write the same file: while one
    # of them holds the lock, the writer's batch waits (it never fails), and
    # its work is committed once the lock is free.
    import sqlite3

    from conftest import wait_for
    from mailer.store.writer import DatabaseWriter

    path = tmp_path / "mailer.db"
    writer = DatabaseWriter(path)
    writer.start()
    try:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("CREATE TABLE kv (key TEXT, value TEXT)")
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO kv (key, value) VALUES ('held', 'by another process')")
        future = writer.submit(lambda db: db.execute(
            "INSERT INTO kv (key, value) VALUES ('written', 'by the writer')").rowcount)
        wait_for(lambda: writer.busy_seconds() > 0.05, message="the writer to be waiting for the lock")
        assert not future.done()
        other.execute("COMMIT")
        other.close()
        assert future.result(timeout=10) == 1
    finally:
        writer.stop()
    assert writer.lock_waits == 1 and writer.longest_lock_wait >= 0.05
    assert [r["key"] for r in rows(path, "SELECT key FROM kv ORDER BY key")] == ["held", "written"]
