"""Received, then filed: the bytes are kept before the 250, parsed and threaded after it.

The listener keeps an arrival (the bytes exactly, the envelope, the SHA-256,
the Message-ID from a scan of the header); the pipeline files it into
``messages`` under the same id. These tests call the archive on a real
SQLite file, then go through the real listener for the desk's view of a
letter still arriving.
"""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import letter, make_config, rows
from mailer.store import scan
from mailer.store.archive import Envelope, store_outbound
from mailer.store.arrivals import arriving, file_arrival, receive, unfiled
from mailer.store.db import open_database
from mailer.store.parsing import parse_message

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc)
ENVELOPE = Envelope("dana@example.org", ("letters@column.example",), "127.0.0.1:4000", "TLSv1.3")


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "archive.db")
    yield database
    database.close()


def keep(db, raw):
    with db.atomic():
        return receive(db, raw, ENVELOPE, kind="letter", clock=lambda: NOW)


def file(db, arrival_id):
    (raw,) = [r for i, r in unfiled(db, 100) if i == arrival_id]
    with db.atomic():
        return file_arrival(db, arrival_id, parse_message(raw), clock=lambda: NOW)


def test_an_arrival_is_the_bytes_exactly_and_filing_moves_it_under_the_same_id(db):
    raw = letter("Sleepless", "Dear column,\r\nI cannot sleep.\r\n", message_id="<a1@example.org>")
    kept = keep(db, raw)

    (row,) = db.execute("SELECT id, raw, message_id, mail_from, peer, tls FROM arrivals").fetchall()
    assert (row[0], bytes(row[1]), row[2], row[3], row[4], row[5]) == (
        kept.message_id, raw, "<a1@example.org>", "dana@example.org", "127.0.0.1:4000", "TLSv1.3")
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0

    filed = file(db, kept.message_id)

    assert filed.message_id == kept.message_id and filed.thread_id
    assert db.execute("SELECT count(*) FROM arrivals").fetchone()[0] == 0
    message = db.execute("SELECT subject, body_text, created_at, meta FROM messages WHERE id = ?",
                         [kept.message_id]).fetchone()
    assert message[0] == "Sleepless" and "cannot sleep" in message[1] and message[2] == "2026-11-26T09:00:00+00:00"
    assert '"tls": "TLSv1.3"' in message[3]
    assert bytes(db.execute("SELECT raw FROM raw_messages WHERE id = ?", [kept.message_id]).fetchone()[0]) == raw
    assert db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'sleep'").fetchall() == [
        (kept.message_id,)]


def test_filing_twice_files_once(db):
    kept = keep(db, letter("Once", message_id="<once@example.org>"))
    raw = bytes(db.execute("SELECT raw FROM arrivals").fetchone()[0])
    assert file(db, kept.message_id) is not None
    with db.atomic():
        assert file_arrival(db, kept.message_id, parse_message(raw), clock=lambda: NOW) is None
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


def test_a_retry_is_kept_once_whether_its_first_copy_is_arriving_or_filed(db):
    raw = letter("Retry", message_id="<retry@example.org>")
    first = keep(db, raw)
    while_arriving = keep(db, raw)
    assert while_arriving.duplicate and while_arriving.message_id == first.message_id
    file(db, first.message_id)
    after_filing = keep(db, raw)
    assert after_filing.duplicate and after_filing.message_id == first.message_id
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM arrivals").fetchone()[0] == 0


def test_same_message_id_with_other_bytes_and_letters_without_one_are_kept_each_time(db):
    keep(db, letter("One", "First.\r\n", message_id="<same@example.org>"))
    keep(db, letter("One", "Edited.\r\n", message_id="<same@example.org>"))
    no_id = b"From: dana@example.org\r\nSubject: no id\r\n\r\nHello\r\n"
    keep(db, no_id)
    keep(db, no_id)
    assert db.execute("SELECT count(*) FROM arrivals").fetchone()[0] == 4


def test_our_own_mail_never_takes_the_id_of_a_letter_still_arriving(db):
    kept = keep(db, letter("Arriving", message_id="<arr@example.org>"))
    ack = b"From: letters@column.example\r\nTo: dana@example.org\r\nSubject: Re: x\r\nMessage-ID: <ack@column.example>\r\n\r\nThanks\r\n"
    with db.atomic():
        out = store_outbound(db, ack, kind="acknowledgement", mail_from="", rcpt_to=["dana@example.org"],
                             clock=lambda: NOW)
    assert out.message_id == kept.message_id + 1
    assert file(db, kept.message_id).message_id == kept.message_id


@pytest.mark.parametrize("raw, expected", [
    (b"Message-ID: <a@b>\r\n\r\nx", "<a@b>"),
    (b"message-id:\r\n <folded@b>\r\n\r\nx", "<folded@b>"),
    (b"Subject: x\r\nMessage-Id: bare@b\r\n\r\n", "<bare@b>"),
    (b"Subject: x\r\n\r\nMessage-ID: <in-body@b>\r\n", None),
    (b"\r\nMessage-ID: <after-blank@b>\r\n", None),
    (b"Message-ID: <lf@b>\n\nbody", "<lf@b>"),
    (b"", None),
])
def test_the_header_scan_finds_the_message_id_the_parser_finds(raw, expected):
    assert scan.message_id(raw) == expected == parse_message(raw).message_id


def test_a_letter_still_arriving_is_shown_with_sender_and_subject_from_its_header(tmp_path):
    from click.testing import CliRunner

    from configfile import write_config_file
    from mailer.cli import main
    from test_desk_web import desk_client, log_in

    config = make_config(tmp_path)
    db = open_database(config.storage.database)
    raw = letter("=?utf-8?q?Gr=C3=BC=C3=9Fe?= from far away", "Dear column,\r\nsomething private.\r\n",
                 message_id="<far@example.org>")
    kept = keep(db, raw)
    assert arriving(db) == [{"id": kept.message_id, "kind": "letter", "received_at": "2026-11-26T09:00:00+00:00",
                             "mail_from": "dana@example.org", "size": len(raw), "status": "arriving",
                             "from_name": "Dana Reader", "from_addr": "dana@example.org",
                             "subject": "Grüße from far away"}]
    db.close()
    # No service runs, so nothing files it: the desk sees it as it is now.
    config_file = write_config_file(config, tmp_path / "mailer.toml")
    listing = CliRunner().invoke(main, ["--config", str(config_file), "threads", "list"])
    assert listing.exit_code == 0, listing.output
    assert f"arriving  #{kept.message_id}" in listing.output and "Grüße from far away" in listing.output
    searching = CliRunner().invoke(main, ["--config", str(config_file), "threads", "search", "private"])
    assert "1 letter(s) arriving, not filed yet" in searching.output and "(no matches)" in searching.output

    with desk_client(config) as client:
        assert log_in(client).status_code == 303
        page = client.get("/").text
        assert "arriving" in page and "Grüße from far away" in page and "Dana Reader" in page
        assert "something private" not in page  # a letter not parsed shows no body
        assert "1 letter arriving, not filed yet" in client.get("/search?q=private").text
    assert rows(config.storage.database, "SELECT count(*) AS n FROM arrivals")[0]["n"] == 1


def test_letters_are_filed_and_acknowledged_while_another_sender_stays_connected(tmp_path):
    # The pipeline waits for a quiet moment while senders are connected, but
    # never for long: a connection held open must not hold up the answers.
    import smtplib

    from conftest import send, wait_for
    from mailer.app.background import BackgroundService

    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as idle:
            idle.ehlo("idle.example")
            assert send(running.smtp_port, letter("While someone waits", message_id="<busy@example.org>"))[0] == 250
            ack = wait_for(lambda: rows(config.storage.database,
                                        "SELECT id FROM messages WHERE kind = 'acknowledgement'"),
                           timeout=10, message="the acknowledgement while a session stays open")
            assert ack
            assert idle.noop()[0] == 250  # the idle session was there all along
    filed = rows(config.storage.database, "SELECT subject FROM messages WHERE direction = 'inbound'")
    assert [r["subject"] for r in filed] == ["While someone waits"]
