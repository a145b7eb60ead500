"""The outbox: every outgoing message, archived first, then delivered by a worker.

``enqueue`` archives the message in its thread and adds the outbox row in the
caller's transaction, so "decided to send" and "queued to send" are one
fact. The :class:`OutboxWorker` inside ``mailer serve`` delivers due rows,
retries temporary failures with exponential backoff, and records the relay's
answer. A row is marked sent in the same breath as the relay's 250, so a
restart resends only what was never accepted. With ``[dkim]`` the worker
signs each message just before its first delivery and archives the signed
bytes first (docs/dkim.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import secrets
import sqlite3
from email.message import EmailMessage

import sqlite_utils

from mailer.clock import Clock, iso, parse_iso
from mailer.config import DeliveryConfig
from mailer.outbound.delivery import PermanentFailure, TemporaryFailure, Transport
from mailer.outbound.dkim import Signer, is_signed
from mailer.store.archive import Stored, add_signature, store_outbound
from mailer.store.db import open_readonly
from mailer.store.parsing import parse_own
from mailer.store.writer import DatabaseWriter

log = logging.getLogger("mailer.outbox")

STATUSES = ("pending", "sent", "failed")


def enqueue(
    db: sqlite_utils.Database,
    message: EmailMessage | bytes,
    *,
    kind: str,
    mail_from: str,
    rcpt_to: list[str],
    clock: Clock,
    thread_id: int | None = None,
    meta: dict | None = None,
) -> tuple[Stored, int]:
    """Archive an outgoing message and queue it; returns (archived message, outbox id)."""
    if isinstance(message, bytes):
        raw, parsed = message, None
    else:
        raw = message.as_bytes()
        # We built it: read its fields from the object rather than parsing
        # the bytes again (after as_bytes(), which settles the boundary).
        parsed = parse_own(message, raw)
    now = clock()
    with db.atomic():
        stored = store_outbound(
            db, raw, kind=kind, mail_from=mail_from, rcpt_to=rcpt_to,
            clock=clock, thread_id=thread_id, meta=meta, parsed=parsed,
        )
        # A Maildir-safe, unguessable name fixed at queue time (see MaildirTransport).
        key = f"{int(now.timestamp())}.M{stored.message_id}R{secrets.token_hex(6)}"
        cursor = db.execute(
            "INSERT INTO outbox (message_id, kind, mail_from, rcpt_to, status, attempts, "
            "next_attempt_at, created_at, delivery_key) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
            [stored.message_id, kind, mail_from, json.dumps(rcpt_to), iso(now), iso(now), key],
        )
    return stored, cursor.lastrowid


def due(db: sqlite_utils.Database, now: str, limit: int = 100, exclude: tuple[int, ...] = ()) -> list[dict]:
    """Pending rows whose next attempt is due, oldest first, with their raw bytes."""
    rows = list(db.query(
        "SELECT o.*, r.raw FROM outbox o JOIN raw_messages r ON r.id = o.message_id "
        "WHERE o.status = 'pending' AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at, o.id LIMIT ?",
        [now, limit + len(exclude)],
    ))
    return [r for r in rows if r["id"] not in exclude][:limit]


def next_due_at(db: sqlite_utils.Database) -> str | None:
    """When the earliest pending row becomes due, or None if nothing is pending."""
    row = db.execute("SELECT min(next_attempt_at) FROM outbox WHERE status = 'pending'").fetchone()
    return row[0] if row else None


def mark_sent(db: sqlite_utils.Database, outbox_id: int, response: str, now: str) -> None:
    """Record that the relay (or Maildir) accepted the message."""
    db.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
        [now, response[:500], outbox_id],
    )


def mark_retry(db: sqlite_utils.Database, outbox_id: int, error: str, now: dt.datetime, config: DeliveryConfig) -> str:
    """Record a temporary failure; schedule the next try or give up. Returns the new status."""
    attempts = db.execute("SELECT attempts FROM outbox WHERE id = ?", [outbox_id]).fetchone()[0] + 1
    if attempts >= config.max_attempts:
        db.execute(
            "UPDATE outbox SET status = 'failed', attempts = ?, last_error = ? WHERE id = ?",
            [attempts, f"gave up after {attempts} attempts: {error}"[:500], outbox_id],
        )
        return "failed"
    delay = backoff_seconds(attempts, config)
    db.execute(
        "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
        [attempts, error[:500], iso(now + dt.timedelta(seconds=delay)), outbox_id],
    )
    return "pending"


def mark_failed(db: sqlite_utils.Database, outbox_id: int, error: str) -> None:
    """Record a permanent failure with the relay's answer."""
    db.execute(
        "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
        [error[:500], outbox_id],
    )


def backoff_seconds(attempts: int, config: DeliveryConfig) -> float:
    """Seconds before try number ``attempts + 1``: doubling from the base, capped."""
    return min(config.retry_base_seconds * (2 ** max(0, attempts - 1)), config.retry_max_seconds)


def retry(db: sqlite_utils.Database, outbox_id: int, *, clock: Clock) -> None:
    """Put a failed message back in the queue, due now. Raises KeyError/ValueError."""
    row = db.execute("SELECT status FROM outbox WHERE id = ?", [outbox_id]).fetchone()
    if row is None:
        raise KeyError(outbox_id)
    if row[0] != "failed":
        raise ValueError(f"outbox message {outbox_id} is {row[0]}, not failed")
    with db.atomic():
        db.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE id = ?",
            [iso(clock()), outbox_id],
        )


def list_outbox(db: sqlite_utils.Database, *, status: str | None = None, limit: int = 200) -> list[dict]:
    """Outbox rows, newest first, with the archived subject and recipient."""
    sql = (
        "SELECT o.id, o.status, o.kind, o.attempts, o.created_at, o.sent_at, o.next_attempt_at, "
        "o.last_error, o.rcpt_to, o.message_id, m.thread_id, m.subject "
        "FROM outbox o JOIN messages m ON m.id = o.message_id"
    )
    params: list = []
    if status:
        sql += " WHERE o.status = ?"
        params.append(status)
    sql += " ORDER BY o.id DESC LIMIT ?"
    params.append(limit)
    out = []
    for row in db.query(sql, params):
        row["rcpt_to"] = json.loads(row["rcpt_to"])
        out.append(row)
    return out


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    """How many outbox rows are pending and how many failed (counted on the status index)."""
    # Not "sent": that is every message ever delivered, and nobody acts on it.
    found = {"pending": 0, "failed": 0}
    for status, n in db.execute(
        "SELECT status, count(*) FROM outbox WHERE status IN ('pending', 'failed') GROUP BY status"
    ):
        found[status] = n
    return found


class OutboxWorker:
    """Delivers due outbox rows with bounded concurrency; wakes on new mail or a timer."""

    def __init__(
        self,
        config: DeliveryConfig,
        writer: DatabaseWriter,
        transport: Transport,
        *,
        clock: Clock,
        poll_seconds: float = 2.0,
        signer: Signer | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.transport = transport
        self.clock = clock
        #: DKIM signer from [dkim]; None sends messages as they were queued.
        self.signer = signer
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._in_flight: set[int] = set()
        self._slots = asyncio.Semaphore(max(1, config.concurrency))
        self._last_send = 0.0
        # Due rows are looked up on a read connection of the worker's own:
        # through the writer, every look (with up to 200 messages' bytes)
        # would be a write transaction that the listener's letters wait behind.
        self._reader: sqlite_utils.Database | None = None

    async def start(self) -> None:
        """Start delivering (anything left pending from before a restart goes first)."""
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    def wake(self) -> None:
        """Look for due messages now rather than at the next poll."""
        self._wake.set()

    def message_stored(self, stored) -> None:  # a letter arrived: its reply may be queued soon
        """Service hook; the pipeline wakes us explicitly, so nothing to do."""

    async def stop(self) -> None:
        """Finish deliveries in flight, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=self.config.timeout + 5)
            except asyncio.TimeoutError:
                self._task.cancel()
        await self.transport.close()
        # Not after a cancel: a look may still be running in its thread.
        if self._reader is not None and (self._task is None or not self._task.cancelled()):
            self._reader.close()
            self._reader = None

    async def _read(self, fn, *args):
        """``fn(db, *args)`` on the worker's read connection, in a thread."""
        return await asyncio.to_thread(self._read_now, fn, args)

    def _read_now(self, fn, args):
        if self._reader is None:
            self._reader = open_readonly(self.writer.path)
        try:
            return fn(self._reader, *args)
        except sqlite3.Error:
            # Opened again at the next look (the file was replaced, say).
            self._reader.close()
            self._reader = None
            raise

    async def _run(self) -> None:
        tasks: set[asyncio.Task] = set()
        while not self._stopping:
            self._wake.clear()
            try:
                rows = await self._read(due, iso(self.clock()), 200, tuple(self._in_flight))
            except Exception:  # noqa: BLE001 - the database hiccuped; try again at the next poll
                log.exception("cannot read the outbox")
                rows = []
            for row in rows:
                await self._slots.acquire()
                if self._stopping:
                    self._slots.release()
                    break
                self._in_flight.add(row["id"])
                task = asyncio.create_task(self._deliver(row))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if rows and not self._stopping:
                continue  # there may be more due right away
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=await self._sleep_seconds())
            except asyncio.TimeoutError:
                pass
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep_seconds(self) -> float:
        try:
            nxt = await self._read(next_due_at)
        except Exception:  # noqa: BLE001
            return self.poll_seconds
        if nxt is None:
            return self.poll_seconds
        wait = (parse_iso(nxt) - self.clock()).total_seconds()
        return max(0.05, min(self.poll_seconds, wait))

    async def _pace(self) -> None:
        if self.config.rate_limit > 0:
            loop = asyncio.get_running_loop()
            gap = 1.0 / self.config.rate_limit
            wait = self._last_send + gap - loop.time()
            self._last_send = max(loop.time(), self._last_send + gap)
            if wait > 0:
                await asyncio.sleep(wait)  # pacing outgoing mail, not waiting for work

    async def _signed(self, row: dict) -> bytes:
        """The row's bytes, DKIM-signed, archived as signed before they go anywhere.

        Every message the outbox delivers passes here, however it was queued
        (pipeline, desk, a command, or before [dkim] was configured), so none
        leaves unsigned. The signed bytes are committed first: the archive is
        then byte for byte what goes on the wire, and a retry or a restart
        sends those same bytes instead of signing again.
        """
        raw = bytes(row["raw"])
        if self.signer is None or is_signed(raw):
            return raw
        # In a thread: the RSA step releases the GIL, so the listener keeps answering.
        signature = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.signer.signature, raw, at=self.clock()))
        return await self.writer.run(add_signature, row["message_id"], signature)

    async def _deliver(self, row: dict) -> None:
        outbox_id = row["id"]
        rcpt_to = json.loads(row["rcpt_to"])
        try:
            await self._pace()
            raw = await self._signed(row)
            response = await self.transport.deliver(raw, row["mail_from"], rcpt_to, row["delivery_key"])
        except TemporaryFailure as exc:
            status = await self.writer.run(mark_retry, outbox_id, str(exc), self.clock(), self.config)
            log.warning("outbox %d (%s): temporary failure, %s: %s", outbox_id, row["kind"],
                        "will retry" if status == "pending" else "gave up", exc,
                        extra={"event": "outbox_retry" if status == "pending" else "outbox_failed",
                               "outbox_id": outbox_id, "kind": row["kind"], "answer": str(exc)})
        except PermanentFailure as exc:
            await self.writer.run(mark_failed, outbox_id, str(exc))
            log.error("outbox %d (%s): refused permanently: %s", outbox_id, row["kind"], exc,
                      extra={"event": "outbox_failed", "outbox_id": outbox_id, "kind": row["kind"],
                             "answer": str(exc)})
        except Exception as exc:  # noqa: BLE001 - unexpected: keep the row, try again later
            status = await self.writer.run(mark_retry, outbox_id, f"internal error: {exc}", self.clock(), self.config)
            log.exception("outbox %d: unexpected delivery error, %s", outbox_id,
                          "will retry" if status == "pending" else "gave up",
                          extra={"event": "outbox_retry" if status == "pending" else "outbox_failed",
                                 "outbox_id": outbox_id, "kind": row["kind"]})
        else:
            await self.writer.run(mark_sent, outbox_id, str(response), iso(self.clock()))
            log.info("outbox %d (%s): delivered", outbox_id, row["kind"],
                     extra={"event": "outbox_sent", "outbox_id": outbox_id, "kind": row["kind"]})
        finally:
            self._in_flight.discard(outbox_id)
            self._slots.release()
