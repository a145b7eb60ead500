"""Receive: what the SMTP listener takes, what it refuses, and what it answers.

Every test talks to a real service over loopback with smtplib and then reads
the archive file as an outsider would. Fixture files are stored with LF line
ends for readability; like an MTA, the tests turn bare LF into CRLF before
sending (SMTP carries CRLF lines), and compare the archive with those bytes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import mailer.store.db
from conftest import FIXTURES, free_port, letter, make_config, rows, send, wait_filed, wait_for
from mailer.app.background import BackgroundService

_QUEUED_AS = re.compile(rb"queued as (\d+)")


def queued_id(reply: bytes) -> int:
    """The archive id in a "250 ... queued as N" reply."""
    found = _QUEUED_AS.search(reply)
    assert found, f"no archive id in {reply!r}"
    return int(found.group(1))


def archived(config) -> list[sqlite3.Row]:
    """Every message that came in, with its raw bytes, oldest first.

    Only inbound rows: the service may already have archived its own
    acknowledgements beside them.
    """
    wait_filed(config.storage.database)
    return rows(
        config.storage.database,
        "SELECT m.*, r.raw FROM messages m JOIN raw_messages r ON r.id = m.id "
        "WHERE m.direction = 'inbound' ORDER BY m.id",
    )


def raw_of(config, message_id: int) -> bytes:
    wait_filed(config.storage.database)
    found = rows(config.storage.database, "SELECT raw FROM raw_messages WHERE id = ?", [message_id])
    assert found, f"message {message_id} is not in the archive"
    return bytes(found[0]["raw"])


def as_sent(data: bytes) -> bytes:
    """What an MTA puts on the wire for a file: CRLF line ends, ending in CRLF."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def session(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("test.example")
    return client


# -- what a 250 promises -------------------------------------------------------------


def test_letter_that_got_250_is_archived_byte_for_byte(service, config):
    raw = letter("Sleepless", "Dear column,\r\nI cannot sleep since the move.\r\n")
    assert raw.endswith(b"\r\n")

    code, reply = send(service.smtp_port, raw)

    assert code == 250, reply
    message_id = queued_id(reply)
    (row,) = archived(config)
    assert row["id"] == message_id
    assert bytes(row["raw"]) == raw
    assert row["size"] == len(raw)
    assert row["kind"] == "letter"
    assert row["mail_from"] == "reader@example.org"
    assert json.loads(row["rcpt_to"]) == ["letters@column.example"]


def test_lines_starting_with_a_dot_come_back_unstuffed(service, config):
    body = (
        ".I start my letter with a dot\r\n"
        "..and this line with two\r\n"
        ".\r\n"
        "(the line above was a lone dot, which must not end the message)\r\n"
    )
    raw = letter("Dots", body)

    code, reply = send(service.smtp_port, raw)

    assert code == 250, reply
    assert raw_of(config, queued_id(reply)) == raw
    (row,) = archived(config)
    assert row["body_text"].startswith(".I start my letter with a dot\n..and this line with two\n.\n")


def test_each_column_address_is_accepted_whatever_its_case(service, config):
    addresses = {
        "LETTERS@Column.Example": "letter",
        "Subscribe@COLUMN.example": "subscribe",
        "unsubscribe@column.EXAMPLE": "unsubscribe",
        "BOUNCES@column.example": "bounce",
    }
    for address in addresses:
        code, reply = send(service.smtp_port, letter(f"to {address}"), rcpt_to=[address])
        assert code == 250, (address, reply)

    assert [(json.loads(r["rcpt_to"]), r["kind"]) for r in archived(config)] == [
        ([address], kind) for address, kind in addresses.items()
    ]


def test_configured_address_in_mixed_case_accepts_lower_case_mail(tmp_path):
    config = make_config(tmp_path, addresses={"letters": "Dear.Column@Column.Example"})
    with BackgroundService(config) as running:
        code, reply = send(running.smtp_port, letter(), rcpt_to=["dear.column@column.example"])
    assert code == 250, reply
    assert [r["kind"] for r in archived(config)] == ["letter"]


# -- what is refused, and that nothing of it is kept ---------------------------------

RELAY_ATTEMPTS = [
    ("<user@gmail.com>", "another-domain"),
    ("<letters@other.example>", "our-local-part-at-another-domain"),
    ("<nobody@column.example>", "unknown-mailbox-at-our-domain"),
    ("<letters@mail.column.example>", "our-subdomain"),
    ("<letters%column.example@evil.example>", "percent-hack"),
    ("<@evil.example:letters@column.example>", "source-route"),
    ("<@evil.example,@relay.example:letters@column.example>", "two-hop-source-route"),
    ('<"letters@column.example"@evil.example>', "quoted-local-part"),
    ("<letters@column.example@evil.example>", "two-at-signs"),
]


@pytest.mark.parametrize("path", [p for p, _ in RELAY_ATTEMPTS], ids=[i for _, i in RELAY_ATTEMPTS])
def test_mail_for_anyone_but_the_column_is_refused_and_not_kept(service, config, path):
    with session(service.smtp_port) as client:
        assert client.mail("reader@example.org")[0] == 250
        code, reply = client.docmd("RCPT", f"TO:{path}")
        data_code, _ = client.docmd("DATA")

    # 553 5.1.3 is aiosmtpd's answer to an address that does not even parse.
    assert (code, reply[:5]) in ((550, b"5.1.1"), (553, b"5.1.3")), reply
    assert data_code == 503  # no recipient, so no DATA either
    assert archived(config) == []


def test_postmaster_of_the_column_domain_is_accepted_kept_and_not_answered(service, config):
    # RFC 5321 4.5.1: a mail domain must accept mail for its postmaster.
    raw = letter("Your server", "Hello postmaster.\r\n", message_id="<pm@example.org>")
    code, _ = send(service.smtp_port, raw, rcpt_to=("Postmaster@column.example",))
    assert code == 250
    row = wait_for(lambda: rows(config.storage.database,
                                "SELECT kind, processed_at FROM messages WHERE message_id = '<pm@example.org>' "
                                "AND processed_at IS NOT NULL"), message="postmaster mail processed")[0]
    assert row["kind"] == "postmaster"
    assert rows(config.storage.database, "SELECT id FROM outbox") == []


def test_recipients_beyond_max_recipients_get_452_and_the_rest_still_get_the_letter(tmp_path):
    config = make_config(tmp_path, smtp={"max_recipients": 2})
    raw = letter("Three of you")
    with BackgroundService(config) as running, session(running.smtp_port) as client:
        client.mail("reader@example.org")
        first = client.rcpt("letters@column.example")
        second = client.rcpt("subscribe@column.example")
        third = client.rcpt("unsubscribe@column.example")
        code, reply = client.data(raw)

    assert [first[0], second[0]] == [250, 250]
    assert third[0] == 452 and third[1].startswith(b"4.5.3"), third
    assert code == 250, reply
    (row,) = archived(config)
    assert json.loads(row["rcpt_to"]) == ["letters@column.example", "subscribe@column.example"]
    assert bytes(row["raw"]) == raw


@pytest.fixture
def small_service(tmp_path):
    """A service that takes messages of at most 2048 bytes."""
    config = make_config(tmp_path, smtp={"max_message_bytes": 2048})
    with BackgroundService(config) as running:
        yield running


def test_declared_size_over_the_limit_is_refused_at_mail_from(small_service):
    with session(small_service.smtp_port) as client:
        assert client.has_extn("size") and client.esmtp_features["size"] == "2048"
        code, reply = client.mail("reader@example.org", ["SIZE=2049"])
        # The session goes on: the same sender may try a smaller letter.
        assert client.mail("reader@example.org", ["SIZE=2048"])[0] == 250

    assert code == 552, reply
    assert reply.startswith(b"5.3.4"), reply
    assert archived(small_service.config) == []


def test_letter_over_the_limit_is_refused_while_streaming_and_the_session_goes_on(small_service):
    too_big = letter("Long story", "I have a lot to say.\r\n" * 200)
    short = letter("Short story", "In short: help.\r\n")
    assert len(too_big) > 2048

    with session(small_service.smtp_port) as client:
        client.mail("reader@example.org")  # no SIZE= declared
        client.rcpt("letters@column.example")
        code, reply = client.data(too_big)
        client.mail("reader@example.org")
        client.rcpt("letters@column.example")
        short_code, short_reply = client.data(short)

    assert code == 552, reply
    assert reply.startswith(b"5.3.4"), reply
    assert short_code == 250, short_reply
    assert [r["subject"] for r in archived(small_service.config)] == ["Short story"]


@pytest.mark.parametrize("extra, expected", [(0, 250), (1, 552)], ids=["exactly-the-limit", "one-byte-over"])
def test_the_size_limit_counts_every_byte(small_service, extra, expected):
    raw = letter("Exact", "")
    while 2048 + extra - len(raw) > 72:
        raw += b"x" * 70 + b"\r\n"
    raw += b"y" * (2048 + extra - len(raw) - 2) + b"\r\n"
    assert len(raw) == 2048 + extra

    code, reply = send(small_service.smtp_port, raw)

    assert code == expected, reply
    assert len(archived(small_service.config)) == (1 if expected == 250 else 0)


# -- whatever a 250 covers: odd senders, odd bytes, odd MIME --------------------------


def test_smtputf8_sender_with_non_ascii_address_is_accepted_and_archived(service, config):
    raw = (
        "From: José Núñez <josé@example.org>\r\n"
        "To: letters@column.example\r\n"
        "Subject: Désolé\r\n"
        "Message-ID: <smtputf8.1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Ma mère me manque.\r\n"
    ).encode("utf-8")

    with session(service.smtp_port) as client:
        assert client.has_extn("smtputf8")
        refused = client.sendmail("josé@example.org", ["letters@column.example"], raw,
                                  mail_options=["SMTPUTF8"])

    assert refused == {}
    (row,) = archived(config)
    assert bytes(row["raw"]) == raw
    assert row["mail_from"] == "josé@example.org"
    assert (row["from_name"], row["from_addr"]) == ("José Núñez", "josé@example.org")
    assert row["correspondent"] == "josé@example.org"
    assert row["subject"] == "Désolé"


def _random_lines(seed: int, size: int) -> bytes:
    noise = bytes(b for b in random.Random(seed).randbytes(size) if b not in b"\r\n")
    return b"".join(noise[i:i + 70] + b"\r\n" for i in range(0, len(noise), 70))


GARBAGE = {
    "random-bytes": _random_lines(7, 4000),
    "headers-without-body": b"From: nobody@example.org\r\nSubject: only headers\r\n",
    "nul-bytes": b"Subject: a \x00 in the subject\r\n\r\nbody with \x00\x00 nul bytes\r\n",
    "no-headers-at-all": b"just a line of text, no colon, no blank line\r\n",
    "a-blank-line": b"\r\n",
    "header-line-too-long-to-fold": b"X-Long: " + b"a" * 990 + b"\r\n\r\nbody\r\n",
    "invalid-utf8-and-8bit": b"Subject: \xff\xfe\xc3\x28\r\nFrom: \xe9t\xe9 <x@y>\r\n\r\n\x80\x81\xff\r\n",
    "mime-declared-not-delivered": (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!! not base64 !!!\r\n"
    ),
}


@pytest.mark.parametrize("raw", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_is_still_archived_raw_and_answered_250(service, config, raw):
    code, reply = send(service.smtp_port, raw)

    assert code == 250, reply
    assert raw_of(config, queued_id(reply)) == raw


# What each fixture must read as once archived. Every file in tests/fixtures
# needs an entry, so a new fixture cannot slip in unchecked.
FIXTURE_EXPECTATIONS = {
    "attachment.eml": {
        "body_text": "I attached a page of my journal; please keep it private.",
        "attachments": [{"filename": "journal page.pdf", "content_type": "application/pdf", "size": 265}],
    },
    "base64-text.eml": {
        "body_text": "Dear column,\nI have been anxious about my new job for weeks.\n"
                     "Merci — ça m’aide de vous écrire.",
    },
    "broken-boundary.eml": {
        "body_contains": ["My mother calls me every day and I do not know how to set a limit."],
        "parse_flag": "StartBoundaryNotFoundDefect",
    },
    "delivery-status.eml": {
        "body_contains": ["could not\nbe delivered", "550 5.1.1 User unknown"],
        "auto_submitted": "auto-replied",
    },
    "html-only.eml": {
        "body_text": "Dear column,\n\nI feel stuck & tired at work.\n\nShould I ask for a transfer?\nSam",
    },
    "latin1-body.eml": {
        "body_text": "Ich bin so müde, daß ich kaum schlafen kann. Grüße aus Köln.",
        "from_name": "Jörg",
    },
    "missing-final-boundary.eml": {
        "body_text": "I am moving out of my parents' house next month and I feel guilty.",
        "attachments": [{"filename": "list.txt", "content_type": "text/plain", "size": 20}],
        "parse_flag": "CloseBoundaryNotFoundDefect",
    },
    "no-message-id.eml": {
        "message_id": None,
        "body_contains": ["advice about my brother"],
    },
    "quoted-printable.eml": {
        "from_name": "Amélie",
        "body_text": "Je me sens découragée depuis que ma sœur a déménagé à l’autre bout du pays, "
                     "et je ne sais plus comment garder le lien avec elle sans l’étouffer.",
    },
    "rfc2047-subject.eml": {
        "subject": "Ça m'aiderait beaucoup à décider",
        "from_name": "François",
    },
    "utf8-raw-headers.eml": {
        "subject": "Ça va mal — Über-Müdigkeit",
        "from_name": "Zoë Lefèvre",
        "body_text": "Je suis épuisée. 疲れた.",
    },
}

FIXTURE_FILES = sorted(FIXTURES.glob("*.eml"))


def test_every_fixture_has_expectations():
    assert sorted(p.name for p in FIXTURE_FILES) == sorted(FIXTURE_EXPECTATIONS)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_tricky_letter_is_archived_and_readable(service, config, path: Path):
    raw = as_sent(path.read_bytes())
    expect = FIXTURE_EXPECTATIONS[path.name]

    code, reply = send(service.smtp_port, raw)

    assert code == 250, reply
    (row,) = archived(config)
    assert bytes(row["raw"]) == raw
    # Defects are fine (the message is odd); an exception inside the parser is not.
    flag = row["parse_error"]
    assert flag is None or flag.startswith("defects: "), flag
    if "parse_flag" in expect:
        assert expect["parse_flag"] in (flag or "")
    for key in ("body_text", "subject", "from_name", "message_id", "auto_submitted"):
        if key in expect:
            assert row[key] == expect[key], key
    for fragment in expect.get("body_contains", []):
        assert fragment in row["body_text"]
    if "attachments" in expect:
        assert json.loads(row["attachments"]) == expect["attachments"]


def test_html_only_letter_is_read_without_markup_scripts_or_styles(service, config):
    code, reply = send(service.smtp_port, as_sent((FIXTURES / "html-only.eml").read_bytes()))

    assert code == 250, reply
    (row,) = archived(config)
    text = row["body_text"]
    for leftover in ("<", ">", "trackOpen", "color: red", "Mail client title", "&amp;"):
        assert leftover not in text


# -- when the archive cannot be written ------------------------------------------------


def test_letter_gets_451_while_the_database_is_locked_and_250_once_it_is_free(tmp_path, monkeypatch):
    # Another program holding the write lock longer than our busy timeout is
    # the failure root cannot fake with file permissions. 10 s is the real
    # timeout; a shorter one keeps the test quick and exercises the same path.
    monkeypatch.setattr(mailer.store.db, "BUSY_TIMEOUT_MS", 200)
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        blocker = sqlite3.connect(config.storage.database, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            locked_code, locked_reply = send(running.smtp_port, letter("While locked"))
            # Still up: a new session is greeted and answered.
            with session(running.smtp_port) as client:
                assert client.noop()[0] == 250
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        code, reply = send(running.smtp_port, letter("After the lock"))

    assert locked_code == 451, locked_reply
    assert locked_reply.startswith(b"4.3.0"), locked_reply
    assert code == 250, reply
    assert [r["subject"] for r in archived(config)] == ["After the lock"]


# -- what the log says, and does not say ----------------------------------------------


def test_log_has_one_line_per_message_and_never_the_letter_text(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mailer.listener")
    config = make_config(tmp_path, smtp={"max_message_bytes": 4096})
    subject = "Confidential zebra subject"
    body = "My private walrus confession about my marriage.\r\n"
    raw = letter(subject, body, message_id="<log-test.1@example.org>")
    with BackgroundService(config) as running:
        accepted = send(running.smtp_port, raw)
        duplicate = send(running.smtp_port, raw)
        wrong_rcpt = send(running.smtp_port, raw, rcpt_to=["someone@gmail.com"])
        too_big = send(running.smtp_port, letter(subject, body * 100))

    assert [accepted[0], duplicate[0], wrong_rcpt[0], too_big[0]] == [250, 250, 550, 552]
    records = [r for r in caplog.records if r.name == "mailer.listener"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 4, lines
    archive_id = queued_id(accepted[1])
    assert lines[0].startswith("accepted message:")
    assert f"id={archive_id}" in lines[0] and "message-id=<log-test.1@example.org>" in lines[0]
    assert lines[1].startswith("duplicate message:") and f"id={archive_id}" in lines[1]
    assert lines[2].startswith("refused recipient:")
    assert lines[3].startswith("refused message: too big")
    # No part of the program may log a letter's words, not only the listener.
    for record in caplog.records:
        if not record.name.startswith("mailer"):
            continue
        text = record.getMessage() + repr(record.args)
        for secret in ("zebra", "Confidential", "walrus", "confession", "marriage"):
            assert secret not in text, (secret, text)


# -- stopping ------------------------------------------------------------------------


def test_stopped_service_leaves_a_checkpointed_database_that_opens_fine(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        code, _ = send(running.smtp_port, letter("Before the stop"))
        assert code == 250

    wal = Path(f"{config.storage.database}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(config.storage.database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute(
            "SELECT subject FROM messages WHERE direction = 'inbound'"
        ).fetchall() == [("Before the stop",)]
    finally:
        conn.close()


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_sigterm_stops_mailer_serve_cleanly_and_keeps_the_letter(tmp_path):
    port = free_port()
    config_file = tmp_path / "mailer.toml"
    config_file.write_text(
        f'[smtp]\nport = {port}\n\n'
        f'[storage]\ndatabase = "var/mailer.db"\n\n'
        f'[web]\nenabled = false\nport = {free_port()}\n\n'
        f'[delivery]\nmaildir = "var/maildir"\n\n'
        f'[digest]\nschedules = "schedules"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    with open(tmp_path / "serve.log", "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailer", "--config", str(config_file), "serve"],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: proc.poll() is not None or _accepts_connections(port),
                     timeout=20, message="mailer serve to listen")
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            code, reply = send(port, letter("Sent just before SIGTERM"))
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = (tmp_path / "serve.log").read_text()

    assert code == 250, reply
    assert returncode == 0, output
    assert "stopped cleanly" in output
    database = tmp_path / "var" / "mailer.db"
    assert [r["subject"] for r in rows(database, "SELECT subject FROM messages WHERE direction = 'inbound'")] == [
        "Sent just before SIGTERM"
    ]
    wal = Path(f"{database}-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_letter_sent_with_swaks_as_the_readme_shows_is_archived(service, config):
    # A second, independent SMTP client (Perl), so the listener is not only
    # ever tested against Python's own smtplib.
    swaks = shutil.which("swaks")
    if swaks is None:
        if os.environ.get("CI") == "true":
            pytest.fail("swaks is missing on CI: .ci/run installs it with apt-get")
        pytest.skip("swaks is not installed (apt-get install swaks)")
    result = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{service.smtp_port}", "--from", "dana@example.org",
         "--to", "letters@column.example", "--header", "Subject: What is a therapist's job?",
         "--body", "My two therapists just took my money. What is a therapist's job?"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    wait_filed(config.storage.database)
    stored = rows(config.storage.database,
                  "SELECT subject, body_text, mail_from FROM messages WHERE direction = 'inbound'")
    assert [(r["subject"], r["mail_from"]) for r in stored] == [("What is a therapist's job?", "dana@example.org")]
    assert "took my money" in stored[0]["body_text"]


# -- a port that is taken ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["smtp", "web"])
def test_serve_on_a_taken_port_names_the_key_and_leaves_nothing_running(tmp_path, which):
    import asyncio
    import threading

    from configfile import write_config_file
    from mailer.config import ConfigError
    from mailer.app.service import Service

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = {"smtp": free_port(), "web": free_port()} | {which: taken}
        config = make_config(tmp_path, smtp={"port": ports["smtp"]}, web={"port": ports["web"], "enabled": True})

        # The command: one line naming the key, no traceback, a non-zero exit.
        path = write_config_file(config, tmp_path / "mailer.toml")
        result = subprocess.run(
            [sys.executable, "-m", "mailer", "--config", str(path), "serve"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
        assert result.returncode != 0
        assert f"{which}.host/{which}.port: cannot listen on 127.0.0.1:{taken}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr

        # In-process: a failed start undoes what it started (writer thread, web port).
        with pytest.raises(ConfigError, match=f"{which}.port"):
            asyncio.run(Service(config).start())
        assert not [t for t in threading.enumerate() if t.name == "mailer-writer" and t.is_alive()]
    if which == "smtp":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", ports["web"]))  # the web server that did start was stopped


# -- what clients send stays out of the log --------------------------------------------------------


def test_a_letter_pipelined_after_a_refused_recipient_never_reaches_the_log(tmp_path, caplog):
    # A client that pipelines (RFC 2920) sends its DATA and the letter before
    # it reads the 550 for RCPT; the server then reads the letter's lines as
    # commands. aiosmtpd names unknown commands in a WARNING, so without
    # care the words of a letter land in the log.
    caplog.set_level(logging.DEBUG, logger="mail.log")  # the worst case: -v and more
    caplog.set_level(logging.INFO)
    lines = [b"Subject: PRIVATESUBJECTWORD", b"", b"SECRETBODYWORD I feel hopeless", b"."]
    with BackgroundService(make_config(tmp_path)) as running:
        with socket.create_connection(("127.0.0.1", running.smtp_port), timeout=10) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"220")
            sock.sendall(b"EHLO client.example\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            sock.sendall(b"\r\n".join([b"MAIL FROM:<reader@example.org>", b"RCPT TO:<nobody@column.example>",
                                       b"DATA", *lines, b"QUIT"]) + b"\r\n")
            replies = reader.read()
    assert b"550 5.1.1" in replies and b"221" in replies
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "unrecognised" in logged  # the refused lines were seen and reported...
    for word in ("PRIVATESUBJECTWORD", "SECRETBODYWORD", "hopeless"):
        assert word not in logged  # ...without their words


@pytest.mark.parametrize("public_url, warned", [
    ("http://column.example", True),
    ("https://column.example", False),
    ("http://127.0.0.1:8026", False),  # the embedded default: a developer's machine
])
def test_serve_warns_when_unsubscribe_links_would_not_be_one_click(tmp_path, caplog, public_url, warned):
    caplog.set_level(logging.WARNING, logger="mailer.service")
    with BackgroundService(make_config(tmp_path, web={"public_url": public_url})):
        pass
    found = [r for r in caplog.records if "web.public_url" in r.getMessage() and "not https" in r.getMessage()]
    assert bool(found) is warned
