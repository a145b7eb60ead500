"""Letters received and not filed yet: what the listener keeps before its 250.

A 250 promises only that the sender's bytes are safe. So before it the
listener writes just those (with the envelope, their SHA-256 and the
Message-ID from a scan of the header) to ``arrivals``; parsing, threading and
the full-text index wait for the pipeline, which parses an arrival outside
any write transaction and then, in one transaction, files it into
``messages`` under the same id and deletes the arrival. A letter is
"received" while it is an arrival and "filed" once it is a message; a crash
between the two leaves it an arrival, filed after the restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import sqlite_utils

from mailer.clock import Clock, iso, parse_iso
from mailer.store import scan
from mailer.store.archive import Envelope, Stored, file_inbound, find_duplicate, next_message_id
from mailer.store.parsing import ParsedMessage


def receive(db: sqlite_utils.Database, raw: bytes, envelope: Envelope, *, kind: str, clock: Clock) -> Stored:
    """Keep ``raw`` exactly, with its envelope, before the 250; nothing is parsed.

    A retry of a message we already hold (the same bytes, with a Message-ID)
    is not kept twice, whether it is filed already or still arriving: the
    one we hold is returned with ``duplicate=True``. (Same bytes means the
    same Message-ID, so comparing the SHA-256 is the old rule of "same
    Message-ID and same bytes".)
    """
    sha = hashlib.sha256(raw).hexdigest()
    msgid = scan.message_id(raw)
    if msgid:
        found = db.execute(
            "SELECT id, thread_id FROM messages WHERE raw_sha256 = ? AND message_id IS NOT NULL "
            "AND direction = 'inbound' LIMIT 1", [sha]
        ).fetchone() or db.execute(
            "SELECT id, NULL FROM arrivals WHERE raw_sha256 = ? AND message_id IS NOT NULL LIMIT 1", [sha]
        ).fetchone()
        if found:
            return Stored(found[0], found[1], duplicate=True)
    arrival_id = next_message_id(db)
    db.execute(
        "INSERT INTO arrivals (id, kind, received_at, mail_from, rcpt_to, peer, tls, helo, message_id, "
        "raw_sha256, size, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [arrival_id, kind, iso(clock()), envelope.mail_from, json.dumps(list(envelope.rcpt_tos)), envelope.peer,
         envelope.tls, envelope.helo[:255], msgid, sha, len(raw), raw],
    )
    return Stored(arrival_id, None)


def unfiled(db: sqlite_utils.Database, limit: int) -> list[tuple[int, bytes]]:
    """The oldest ``limit`` arrivals as (id, raw bytes), for the pipeline to parse."""
    return [(row[0], bytes(row[1])) for row in db.execute(
        "SELECT id, raw FROM arrivals ORDER BY id LIMIT ?", [limit])]


def file_arrival(db: sqlite_utils.Database, arrival_id: int, parsed: ParsedMessage, *, clock: Clock) -> Stored | None:
    """File one arrival, parsed already, into ``messages`` under its id; None if it was filed before.

    Runs in the writer's transaction; ``parsed`` was made outside it. A
    duplicate by the parsed Message-ID and the SHA-256 (one the header scan
    could not see) is dropped and the message held already returned.
    """
    row = db.execute(
        "SELECT kind, received_at, mail_from, rcpt_to, peer, tls, helo, raw_sha256, size FROM arrivals WHERE id = ?",
        [arrival_id],
    ).fetchone()
    if row is None:
        return None
    kind, received_at, mail_from, rcpt_to, peer, tls, helo, sha, size = row
    stored = find_duplicate(db, parsed, sha)
    if stored is None:
        envelope = Envelope(mail_from, tuple(json.loads(rcpt_to)), peer, tls, helo)
        stored = file_inbound(db, parsed, None, sha, envelope, kind=kind, received_at=received_at, clock=clock,
                              message_id=arrival_id, size=size)
    db.execute("DELETE FROM arrivals WHERE id = ?", [arrival_id])
    return stored


def arriving(db: sqlite_utils.Database, limit: int = 50) -> list[dict]:
    """Letters received and not filed yet, oldest first, with sender and subject from a header scan."""
    found = []
    for row in db.execute(
        "SELECT id, kind, received_at, mail_from, size, raw FROM arrivals ORDER BY id LIMIT ?", [limit]
    ):
        found.append({"id": row[0], "kind": row[1], "received_at": row[2], "mail_from": row[3],
                      "size": row[4], "status": "arriving", **scan.summary(bytes(row[5]))})
    return found


def waiting(db: sqlite_utils.Database, now: dt.datetime) -> dict:
    """How many letters wait to be filed, and the oldest one's age in seconds (None if none wait)."""
    count, oldest = db.execute("SELECT count(*), min(received_at) FROM arrivals").fetchone()
    age = None if oldest is None else max(0.0, (now - parse_iso(oldest)).total_seconds())
    return {"count": count, "oldest_age_seconds": age}
