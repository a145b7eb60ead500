"""What one letter and one client may cost the listener, and letters the intake must not garble.

Each test talks to a real service over loopback SMTP (raw sockets where a
polite client would not send the bad thing) and looks at the answers on the
wire and the rows in the archive file.
"""

from __future__ import annotations

import datetime as dt
import gc
import socket
import sqlite3
import threading
import time
import tracemalloc
import weakref

import httpx
import pytest
from click.testing import CliRunner

from conftest import free_port, letter, make_config, rows, send, wait_filed, wait_for
from mailer.app.background import BackgroundService
from mailer.cli import main
from mailer.store import archive, db as store_db, parsing
from mailer.store.db import open_database
from test_hostile import LETTERS, RawClient, inbound, start_session, still_serving


FIXED = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc)


def _data(client: RawClient, message: bytes) -> tuple[int, str]:
    assert client.cmd(b"MAIL FROM:<reader@example.org>")[0] == 250
    assert client.cmd(b"RCPT TO:<" + LETTERS.encode() + b">")[0] == 250
    assert client.cmd(b"DATA")[0] == 354
    client.send(message + b".\r\n")
    return client.reply()


def _refused_and_nothing_kept(service: BackgroundService, message: bytes, limit_key: str) -> None:
    client = start_session(service.smtp_port)
    code, text = _data(client, message)
    assert code == 552 and "5.3.4" in text and limit_key in text, text
    assert client.cmd(b"MAIL FROM:<reader@example.org>")[0] == 250, "the session goes on"
    client.close()
    assert inbound(service.config) == []
    still_serving(service.smtp_port)


@pytest.fixture
def running(tmp_path):
    """The service with the default limits."""
    with BackgroundService(make_config(tmp_path)) as service:
        yield service


# -- the header's cost is bounded before anything reads it ----------------------------------


def test_a_subject_of_encoded_words_over_the_field_limit_gets_552_naming_it(running):
    # 64 KB of RFC 2047 words, folded into short lines: the standard parser
    # would spend memory growing with the square of it (113 MB here; 2.7 GB at 280 KB).
    words = b"\r\n".join([b" =?utf-8?q?a?="] * 4700)
    message = b"From: reader@example.org\r\nSubject:" + words + b"\r\n\r\nbody\r\n"
    _refused_and_nothing_kept(running, message, "smtp.max_header_bytes")


def test_a_header_block_over_its_limit_gets_552_naming_it(tmp_path):
    config = make_config(tmp_path, smtp={"max_header_block_bytes": 65536})
    fields = b"".join(b"X-Note-%d: %s\r\n" % (n, b"n" * 480) for n in range(200))  # about 100 KB
    with BackgroundService(config) as service:
        _refused_and_nothing_kept(service, b"From: reader@example.org\r\n" + fields + b"\r\nbody\r\n",
                                  "smtp.max_header_block_bytes")


def test_more_header_fields_than_the_limit_get_552_naming_it(running):
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(1500))
    _refused_and_nothing_kept(running, b"From: reader@example.org\r\n" + fields + b"\r\nbody\r\n",
                              "smtp.max_header_fields")


def test_a_letter_with_a_header_just_under_the_limits_is_taken(running):
    words = b"\r\n".join([b" =?utf-8?q?a?="] * 1500)  # about 22 KB, under the 32 KiB default
    raw = b"From: reader@example.org\r\nSubject:" + words + b"\r\n\r\nbody\r\n"
    code, reply = send(running.smtp_port, raw)
    assert code == 250, reply
    assert bytes(inbound(running.config)[0]["raw"]) == raw


def test_encoded_words_in_a_mime_part_header_cost_bounded_memory():
    # smtp.max_header_bytes bounds the message's own header; the headers of
    # the parts inside it are bounded where they are read.
    words = b"\r\n".join([b" =?utf-8?q?a?="] * 6400)  # 96 KB
    raw = (b"From: reader@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\n"
           b"Dear column\r\n--BB\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename=\"" + words + b"\"\r\n\r\nAAAA\r\n--BB--\r\n")
    tracemalloc.start()
    try:
        parsed = parsing.parse_message(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.body_text == "Dear column" and len(parsed.attachments) == 1
    assert peak < 48 * 1024 * 1024, f"{peak / 2**20:.0f} MiB to read one letter"


# -- reading happens outside the write lock --------------------------------------------------


def test_while_a_letter_is_being_read_the_archive_can_be_written_by_others(running, monkeypatch):
    reading, finish = threading.Event(), threading.Event()
    fill = parsing._fill

    def slow_fill(result, msg):
        if msg.get("subject") == "Slow to read":
            reading.set()
            finish.wait(30)
        return fill(result, msg)

    monkeypatch.setattr(parsing, "_fill", slow_fill)
    answer: dict = {}
    sender = threading.Thread(
        target=lambda: answer.update(reply=send(running.smtp_port, letter("Slow to read"))))
    sender.start()
    try:
        assert reading.wait(10), "the letter was never read"
        # A few seconds' wait covers the other workers' brief writes; a lock
        # held while this letter is read would be held until finish is set.
        other = sqlite3.connect(running.config.storage.database, timeout=5)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if the reader held the lock
            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        finish.set()
        sender.join(30)
    assert answer["reply"][0] == 250, answer


def test_a_cli_write_while_the_archive_is_locked_fails_in_one_clear_line(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    database = open_database(config.storage.database)
    with database.atomic():
        stored = archive.store_inbound(database, letter("Held"), archive.Envelope("dana@example.org", (LETTERS,)),
                                       kind="letter", clock=lambda: FIXED)
    database.close()
    path = tmp_path / "mailer.toml"
    path.write_text(f'[storage]\ndatabase = "{config.storage.database}"\n', encoding="utf-8")
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(config.storage.database)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = CliRunner().invoke(main, ["--config", str(path), "threads", "mark", str(stored.thread_id), "archived"])
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the archive is busy"), result.output


def test_healthz_reports_a_writer_stuck_in_one_batch(tmp_path, monkeypatch):
    from mailer.web import health

    monkeypatch.setattr(health, "WRITER_STUCK_SECONDS", 0.3)
    config = make_config(tmp_path, web={"enabled": True, "port": free_port()})
    url = f"http://127.0.0.1:{config.web.port}/healthz"
    with BackgroundService(config) as service:
        release = threading.Event()
        service.service.writer.submit(lambda db: release.wait(30))
        try:
            answer = wait_for(lambda: (lambda a: a if a.status_code == 503 else None)(httpx.get(url, timeout=10)),
                              message="healthz to notice the stuck writer")
            assert answer.json() == {"status": "unhealthy",
                                     "checks": {"database": "ok", "listener": "ok", "writer": "stuck", "pipeline": "ok"}}
        finally:
            release.set()
        wait_for(lambda: httpx.get(url, timeout=10).status_code == 200, message="healthy again")


# -- slow and crowding clients ------------------------------------------------------------------


def test_one_client_address_cannot_take_more_than_its_share_of_sessions(tmp_path):
    config = make_config(tmp_path, smtp={"max_connections_per_client": 3, "max_connections": 30})
    with BackgroundService(config) as service:
        crowd = [RawClient(service.smtp_port) for _ in range(3)]
        try:
            late = socket.create_connection(("127.0.0.1", service.smtp_port), timeout=5)
            answer = late.recv(1024)
            late.close()
            assert answer.startswith(b"421 4.7.0") and b"your address" in answer, answer
            # Another address (all of 127/8 is loopback) is still served.
            other = socket.create_connection(("127.0.0.1", service.smtp_port), timeout=5,
                                             source_address=("127.0.0.2", 0))
            assert other.recv(1024).startswith(b"220")
            other.close()
        finally:
            for client in crowd:
                client.close()
        wait_for(lambda: _banner(service.smtp_port).startswith(b"220"), message="a session once the crowd left")


def _banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(1024)


def test_a_sender_trickling_data_below_the_minimum_rate_is_cut_off(tmp_path):
    config = make_config(tmp_path, smtp={"idle_timeout": 1.0, "min_data_rate": 100.0})
    with BackgroundService(config) as service:
        client = start_session(service.smtp_port)
        assert client.cmd(b"MAIL FROM:<reader@example.org>")[0] == 250
        assert client.cmd(b"RCPT TO:<" + LETTERS.encode() + b">")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        client.sock.settimeout(0.2)
        heard = b""
        deadline = time.monotonic() + 8  # a byte every 0.2 s would keep an idle timer alive for ever
        while time.monotonic() < deadline:
            try:
                client.send(b"x")
                chunk = client.sock.recv(1024)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            if not chunk:
                break
            heard += chunk
        else:
            pytest.fail("the trickling sender was never cut off")
        client.close()
        assert b"421 4.4.2" in heard, heard
        still_serving(service.smtp_port)


def test_turning_a_session_away_logs_no_traceback(tmp_path, caplog):
    config = make_config(tmp_path, smtp={"max_connections": 1})
    with BackgroundService(config) as service:
        first = start_session(service.smtp_port)
        late = socket.create_connection(("127.0.0.1", service.smtp_port), timeout=5)
        assert late.recv(1024).startswith(b"421 4.7.0")
        late.close()
        # One more round trip on the loop: the refused connection's callbacks have run.
        assert first.cmd(b"NOOP")[0] == 250
        first.close()
    assert not [r for r in caplog.records if r.exc_info or "AssertionError" in r.getMessage()], caplog.text


def test_an_abandoned_session_lets_go_of_what_it_was_reading_without_a_garbage_collection(running):
    client = start_session(running.smtp_port)
    assert client.cmd(b"MAIL FROM:<reader@example.org>")[0] == 250
    assert client.cmd(b"RCPT TO:<" + LETTERS.encode() + b">")[0] == 250
    assert client.cmd(b"DATA")[0] == 354
    handler = running.service.handler
    session = next(iter(handler.sessions))
    # The task that reads the session holds, in its frames, the letter read so far.
    task = weakref.ref(session._handler_coroutine)
    del session
    gc.disable()
    try:
        client.send(b"From: reader@example.org\r\n\r\n" + b"z" * 900 + b"\r\n" * 200)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # a reset, mid-DATA
        wait_for(lambda: task() is None, timeout=5, message="the abandoned session's reader to be freed")
    finally:
        gc.enable()


# -- long lines --------------------------------------------------------------------------------


def test_a_letter_with_a_5000_character_line_gets_250_and_is_kept_byte_for_byte(running):
    body = ("Dear column, " + "I wrote this in a web form that never breaks lines. " * 100)[:5000]
    raw = letter("One long line", body + "\r\n")
    code, reply = send(running.smtp_port, raw)
    assert code == 250, reply
    assert bytes(inbound(running.config)[0]["raw"]) == raw


def test_a_line_over_the_line_limit_is_refused_and_the_session_goes_on(tmp_path):
    config = make_config(tmp_path, smtp={"max_line_bytes": 4096})
    with BackgroundService(config) as service:
        client = start_session(service.smtp_port)
        code, text = _data(client, b"From: reader@example.org\r\n\r\n" + b"y" * 5000 + b"\r\n")
        assert code == 500 and "line too long" in text.lower(), text
        assert client.cmd(b"MAIL FROM:<reader@example.org>")[0] == 250
        client.close()
        assert inbound(config) == []


# -- several column addresses, and text without a charset --------------------------------------


def test_a_letter_also_sent_to_subscribe_reaches_the_inbox_and_is_acknowledged(running):
    raw = letter("Both at once", "Dear column,\r\nplease read this, and sign me up.\r\n")
    code, reply = send(running.smtp_port, raw, rcpt_to=("subscribe@column.example", LETTERS))
    assert code == 250, reply
    database = running.config.storage.database
    wait_filed(database)
    kept = rows(database, "SELECT kind, thread_id FROM messages WHERE direction = 'inbound'")
    assert [r["kind"] for r in kept] == ["letter"]
    assert rows(database, "SELECT has_letter FROM threads WHERE id = ?", [kept[0]["thread_id"]])[0][0] == 1
    wait_for(lambda: rows(database, "SELECT 1 FROM messages WHERE kind = 'acknowledgement'"),
             message="the letter's acknowledgement")


def test_a_latin1_letter_without_a_charset_is_stored_readable_and_found(running):
    head = (b"From: Dana <dana@example.org>\r\nTo: letters@column.example\r\nSubject: Lately\r\n"
            b"Message-ID: <latin1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n")
    raw = head + "J'ai été triste toute la semaine, et déjà fatiguée.\r\n".encode("latin-1")
    code, reply = send(running.smtp_port, raw)
    assert code == 250, reply
    wait_filed(running.config.storage.database)
    kept = rows(running.config.storage.database,
                "SELECT m.id, m.body_text, r.raw FROM messages m JOIN raw_messages r ON r.id = m.id")
    assert kept[0]["body_text"] == "J'ai été triste toute la semaine, et déjà fatiguée."
    assert bytes(kept[0]["raw"]) == raw
    database = open_database(running.config.storage.database)
    try:
        assert [hit["id"] for hit in archive.search(database, "été")] == [kept[0]["id"]]
    finally:
        database.close()
