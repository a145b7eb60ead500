"""Shared fixtures: a real service on loopback, a real SMTP sink, real SQLite files.

Nothing here mocks a socket or a clock inside production code: the service
runs for real on a free port, outgoing mail goes to a real aiosmtpd sink or a
real Maildir, and tests look at bytes on the wire and rows in the file.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from mailer import topics
from mailer.config import Config, config_from_dict, resolve_paths
from mailer.store.db import open_database
from mailer.app.background import BackgroundService

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def wait_filed(db_path: Path, timeout: float = 10.0) -> None:
    """Wait until the pipeline has filed every letter received (parsed, threaded, indexed).

    A 250 means the bytes are kept (an ``arrivals`` row); what the archive
    holds about them beyond that comes a moment later.
    """
    wait_for(lambda: rows(db_path, "SELECT count(*) AS n FROM arrivals")[0]["n"] == 0, timeout,
             message="every letter received to be filed")


def make_config(tmp_path: Path, **sections) -> Config:
    """A Config for tests: files under ``tmp_path``, free ports, Maildir delivery."""
    data = {
        "smtp": {"port": 0},
        "web": {"port": free_port(), "enabled": False},
        "storage": {"database": "mailer.db"},
        "delivery": {"maildir": "maildir", "retry_base_seconds": 0.2, "retry_max_seconds": 1.0},
        "digest": {"schedules": str(tmp_path / "schedules")},
        # In the service's own process: the pipeline worker process has tests
        # of its own (test_pipeline_worker.py, test_crash.py), which ask for it.
        "pipeline": {"worker": "thread"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return resolve_paths(config_from_dict(data), tmp_path, source=None)


class SmtpSink:
    """A real SMTP server (aiosmtpd Controller) that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.refuse_with: str | None = None

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_with:
            return self.refuse_with
        with self.lock:
            self.messages.append({
                "mail_from": envelope.mail_from,
                "mail_options": list(envelope.mail_options),  # e.g. BODY=8BITMIME
                "rcpt_tos": list(envelope.rcpt_tos),
                "data": bytes(envelope.original_content),
            })
        return "250 2.0.0 Ok: sunk"


@pytest.fixture
def smtp_sink():
    """A running SMTP sink on loopback; ``.port`` and ``.messages``."""
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), decode_data=False, enable_SMTPUTF8=True)
    controller.start()
    sink.port = controller.port
    sink.controller = controller
    yield sink
    controller.stop()


@pytest.fixture
def config(tmp_path) -> Config:
    """The default test configuration (Maildir delivery under tmp_path)."""
    return make_config(tmp_path)


@pytest.fixture
def service(config):
    """A running mailer service on a free loopback port."""
    with BackgroundService(config) as running:
        yield running


def send(port: int, raw: bytes, *, mail_from: str = "reader@example.org",
         rcpt_to=("letters@column.example",), host: str = "127.0.0.1"):
    """Send ``raw`` over real SMTP and return (code, reply) of the final DATA."""
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("test.example")
        client.mail(mail_from)
        for rcpt in rcpt_to:
            code, reply = client.rcpt(rcpt)
            if code >= 400:
                return code, reply
        return client.data(raw)


def rows(db_path: Path, sql: str, params=()) -> list[sqlite3.Row]:
    """Query the archive file directly, as an outside observer would."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def letter(subject="Hello", body="Dear column,\r\nI have a question.\r\n", *,
           sender="Dana Reader <dana@example.org>", to="letters@column.example",
           message_id: str | None = "<auto>", extra_headers: str = "") -> bytes:
    """A small CRLF letter as bytes, with a fresh Message-ID unless told otherwise."""
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}",
             "Date: Thu, 26 Nov 2026 09:00:00 +0000", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8"]
    if message_id == "<auto>":
        message_id = f"<{time.monotonic_ns()}.{threading.get_ident()}@example.org>"
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    head = "\r\n".join(lines)
    if extra_headers:
        head += "\r\n" + extra_headers.strip("\r\n").replace("\r\n", "\n").replace("\n", "\r\n")
    return (head + "\r\n\r\n" + body).encode("utf-8")


class SteppingClock:
    """A clock the test moves by hand (production code takes it as an argument)."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now

    def advance(self, **delta) -> None:
        with self.lock:
            self.now += dt.timedelta(**delta)


def import_example_topics(config: Config) -> None:
    """Put the shipped sample catalog (examples/topics.toml) into the config's archive."""
    db = open_database(config.storage.database)
    catalog, problems = topics.load_catalog(REPO / "examples" / "topics.toml")
    assert not problems
    topics.import_topics(db, catalog, clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()


def handled(config, message_id: str) -> dict:
    """The stored message with ``message_id`` once the pipeline has handled it."""

    def check():
        found = rows(config.storage.database,
                     "SELECT * FROM messages WHERE message_id = ? AND processed_at IS NOT NULL", [message_id])
        return found[0] if found else None
    return wait_for(check, message=f"{message_id} to be handled")
