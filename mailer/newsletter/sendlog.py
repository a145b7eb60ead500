"""The digest's send log: one row per digest and subscriber, and one run per digest at a time.

A run claims a digest with a lease it renews while sending; a copy's row is
committed as ``sending`` before the final dot and turned into ``sent``,
``failed`` or ``deferred`` by the relay's answer, so a run killed anywhere
and started again sends to nobody twice (docs/digest.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket

import sqlite_utils

from mailer.clock import iso, parse_iso
from mailer.newsletter.digest import LEASE, DigestBusy
from mailer.store.archive import next_message_id, normalize_subject
from mailer.store.writer import DatabaseWriter

log = logging.getLogger("mailer.digest")



def claim(db: sqlite_utils.Database, digest_id: int, runner: str, now: dt.datetime) -> None:
    row = db.execute("SELECT runner, lease_until FROM digests WHERE id = ?", [digest_id]).fetchone()
    holder, until = row if row else (None, None)
    if holder and holder != runner and until and parse_iso(until) > now and alive(holder):
        raise DigestBusy(f"digest {digest_id} is being sent by {holder} (until {until})")
    db.execute("UPDATE digests SET runner = ?, lease_until = ? WHERE id = ?",
               [runner, iso(now + LEASE), digest_id])


def release(db: sqlite_utils.Database, digest_id: int, runner: str) -> None:
    db.execute("UPDATE digests SET runner = NULL, lease_until = NULL WHERE id = ? AND runner = ?",
               [digest_id, runner])


def alive(runner: str) -> bool:
    """Whether a runner (host:pid) may still be running; a dead local process is not."""
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------
# The send log


def checkpoint(db, digest_id: int, subscriber_id: int, now: str) -> bool:
    """Just before the end of DATA: log the copy 'sending' (False: the subscriber left).

    This is the one commit a copy waits for, so it is two small statements;
    the archive row follows with the relay's answer (:func:`archive_copies`).
    """
    row = db.execute("SELECT status FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    if row is None or row[0] != "confirmed":
        return False
    db.execute(
        "INSERT INTO digest_sends (digest_id, subscriber_id, status, attempts, updated_at) "
        "VALUES (?, ?, 'sending', 1, ?) ON CONFLICT (digest_id, subscriber_id) DO UPDATE SET "
        "status = 'sending', attempts = attempts + 1, updated_at = excluded.updated_at",
        [digest_id, subscriber_id, now],
    )
    return True


def archive_copies(db, digest_id: int, archive: dict, copies: list[tuple[int, str, int, str, bytes]],
                    now: str) -> None:
    """Archive copies the relay took (or may have): (subscriber id, address, size, sha256, DKIM-Signature) each.

    The signature header (b"" when not signing) is kept in the row's meta: it
    is the one part of a copy the frame cannot rebuild.

    A copy is rebuilt exactly from its digest's frame, so its archive row can
    follow the send; a copy logged 'sending' by a run that was killed before
    archiving it is archived by the next run (:meth:`DigestRun._backfill`).
    """
    for subscriber_id, address, size, sha256, signature in copies:
        found = db.execute(
            "SELECT d.message_id, s.thread_id FROM digest_sends d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.digest_id = ? AND d.subscriber_id = ?", [digest_id, subscriber_id],
        ).fetchone()
        if found is None or found[0] is not None:
            continue  # archived already (a copy is archived once, however often it was tried)
        thread_id = found[1]
        if thread_id is None:
            thread_id = db.execute(
                "INSERT INTO threads (subject, subject_key, correspondent, status, urgent, created_at, "
                "last_message_at, message_count) VALUES (?, ?, ?, 'archived', 0, ?, ?, 0)",
                [archive["subject"], normalize_subject(archive["subject"]), address, now, now],
            ).lastrowid
            db.execute("UPDATE subscribers SET thread_id = ? WHERE id = ?", [thread_id, subscriber_id])
        message_id = db.execute(
            "INSERT INTO messages (id, thread_id, direction, kind, created_at, correspondent, mail_from, rcpt_to, "
            "message_id, from_addr, from_name, to_addrs, subject, date, auto_submitted, list_id, precedence, "
            "body_text, size, raw_sha256, processed_at, disposition, meta) "
            "VALUES (?, ?, 'outbound', 'digest', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'auto-generated', ?, 'bulk', ?, ?, ?, ?, ?, ?)",
            # Ids are shared with letters received and not filed yet.
            [next_message_id(db), thread_id, now, address, archive["mail_from"], json.dumps([address]),
             archive["message_id"].replace(archive["marker"], str(subscriber_id)),
             archive["from_addr"], archive["from_name"], json.dumps([address]), archive["subject"],
             archive["date"], archive["list_id"], archive["body_text"], size, sha256,
             now, "digest copy (compact: rebuilt from its frame)",
             json.dumps({"digest": digest_id, "subscriber": subscriber_id, "compact": True,
                         **({"dkim": signature.decode("ascii")} if signature else {})})],
        ).lastrowid
        db.execute(
            "UPDATE threads SET message_count = message_count + 1, last_message_at = max(last_message_at, ?) "
            "WHERE id = ?", [now, thread_id],
        )
        db.execute("UPDATE digest_sends SET message_id = ? WHERE digest_id = ? AND subscriber_id = ?",
                   [message_id, digest_id, subscriber_id])


_RECORD = (
    "INSERT INTO digest_sends (digest_id, subscriber_id, status, attempts, response, updated_at) "
    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (digest_id, subscriber_id) DO UPDATE SET "
    "status = excluded.status, response = excluded.response, updated_at = excluded.updated_at, "
    "attempts = attempts + {}"
)


def record(db, digest_id: int, subscriber_id: int, status: str, response: str, now: str, attempted: bool) -> None:
    """The relay's answer (or our reason) for one copy."""
    db.execute(_RECORD.format(1 if attempted else 0), [digest_id, subscriber_id, status, response[:500], now])


def record_many(db, answers: list[tuple], digest_id: int, archive: dict, copies: list[tuple], now: str) -> None:
    """Several relays' answers at once, and the archive rows of the copies they took."""
    db.conn.executemany(_RECORD.format(0), answers)
    archive_copies(db, digest_id, archive, copies, now)


def finish(db, digest_id: int, now: str) -> bool:
    """Mark the digest sent if nobody is left to send to; True if it was."""
    left = db.execute(
        "SELECT 1 FROM subscribers s WHERE s.status = 'confirmed' AND NOT EXISTS ("
        "SELECT 1 FROM digest_sends d WHERE d.digest_id = ? AND d.subscriber_id = s.id AND d.status != 'deferred') "
        "LIMIT 1", [digest_id],
    ).fetchone()
    if left:
        return False
    db.execute("UPDATE digests SET status = 'sent', finished_at = ? WHERE id = ? AND status = 'sending'",
               [now, digest_id])
    return True


class SendLogWriter(DatabaseWriter):
    """The run's own writer: group commits with ``synchronous=NORMAL``.

    In WAL mode a NORMAL commit is in the operating system's hands when it
    returns, so it survives the process being killed (what the send log must
    survive); only a power cut can lose the last few. That is the price of
    not waiting for an fsync before every message's final dot.
    """

    _tuned: int | None = None

    def _connection(self):
        db = super()._connection()
        if self._tuned != id(db):
            db.execute("PRAGMA synchronous = NORMAL")
            self._tuned = id(db)
        return db
