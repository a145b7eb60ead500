"""Sending a digest exactly once to every confirmed subscriber.

Subscribers are read in batches by id and a bounded queue feeds
``digest.concurrency`` workers, each with one reused connection, so memory
stays flat however many subscribers there are.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import os
import socket
from dataclasses import dataclass, field
from email import policy
from typing import Callable

import jinja2
import sqlite_utils

from mailer.clock import Clock, iso, parse_iso
from mailer.config import Config
from mailer.newsletter.digest import LEASE, Digest, open_digest
from mailer.newsletter.sendlog import (
    SendLogWriter,
    archive_copies,
    checkpoint,
    claim,
    finish,
    record,
    record_many,
    release,
)
from mailer.newsletter.subscribers import (
    unsubscribe_token,
)
from mailer.newsletter.verp import verp_address
from mailer.newsletter.transport import (
    Copy,
    DigestTransport,
    Skip,
    Uncertain,
    delivery_key,
)
from mailer.outbound.delivery import (
    PermanentFailure,
    TemporaryFailure,
)
from mailer.outbound.dkim import Signer, load_signer
from mailer.store.db import open_database
from mailer.store.writer import DatabaseWriter

log = logging.getLogger("mailer.digest")



@dataclass
class Summary:
    """What a run did. ``skipped`` counts copies not sent this run because they were
    already done by an earlier run, or the subscriber left during the run."""

    digest_id: int | None = None
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    uncertain: int = 0
    finished: bool = False
    reason: str = ""
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the log and the terminal."""
        extra = ""
        if self.deferred:
            extra += f", deferred {self.deferred} (retried by the next run)"
        if self.uncertain:
            extra += f", uncertain {self.uncertain} (the relay may have them; not resent)"
        return f"sent {self.sent}, failed {self.failed}, skipped {self.skipped}{extra}"


Progress = Callable[[str, int], None]


class _Pacer:
    """At most ``rate`` starts per second across all workers (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.gap:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self.next)
        self.next = start + self.gap
        if start > now:
            await asyncio.sleep(start - now)  # pacing outgoing mail, not waiting for work


class DigestRun:
    """Sends one digest to every confirmed subscriber who has not had it."""

    def __init__(
        self,
        digest: Digest,
        *,
        config: Config,
        writer: DatabaseWriter,
        reader: sqlite_utils.Database,
        transport: DigestTransport,
        key: bytes,
        clock: Clock,
        progress: Progress | None = None,
        stopping: asyncio.Event | None = None,
        signer: Signer | None = None,
    ) -> None:
        assert digest.frame is not None
        self.stopping = stopping or asyncio.Event()
        # Each copy is DKIM-signed with t= the digest's composition
        # time, so a copy signed again (see _backfill) is the same bytes.
        self.signer = signer
        self._signed_at = parse_iso(digest.created_at)
        self.digest = digest
        self.frame = digest.frame
        self.config = config
        self.writer = writer
        self.reader = reader
        self.transport = transport
        self.key = key
        self.clock = clock
        self.progress = progress or (lambda event, n: None)
        self.summary = Summary(digest_id=digest.id)
        self._pending: set[asyncio.Future] = set()
        self._answers: list[tuple] = []
        self._copies: list[tuple] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pacer = _Pacer(config.digest.rate_limit)
        message = email.message_from_bytes(self.frame.raw, policy=policy.default)
        self._archive = {
            "mail_from": config.addresses.bounces,
            "from_addr": config.addresses.letters,
            "from_name": config.column.name,
            "subject": digest.subject,
            "date": email.utils.parsedate_to_datetime(message["Date"]).isoformat(),
            "list_id": str(message["List-Id"]),
            # Kept short: it is indexed for search once per copy. The copy itself
            # is rebuilt from the frame (`mailer digest raw`).
            "body_text": f"Digest {digest.id}: {len(digest.topics)} new piece{'' if len(digest.topics) == 1 else 's'}"
                         " (the copy: mailer digest raw)",
            "message_id": str(message["Message-ID"]),
            "marker": self.frame.markers.subscriber,
        }

    def count_remaining(self) -> int:
        """Subscribers this run still has to send to (for the progress bar)."""
        return self.reader.execute(
            "SELECT count(*) FROM subscribers s WHERE s.status = 'confirmed' AND NOT EXISTS ("
            "SELECT 1 FROM digest_sends d WHERE d.digest_id = ? AND d.subscriber_id = s.id "
            "AND d.status != 'deferred')", [self.digest.id],
        ).fetchone()[0]

    def count_done_before(self) -> int:
        """Copies an earlier run already settled (they are skipped)."""
        return self.reader.execute(
            "SELECT count(*) FROM digest_sends WHERE digest_id = ? AND status IN ('sent', 'sending', 'failed')",
            [self.digest.id],
        ).fetchone()[0]

    async def run(self) -> Summary:
        """Resolve what an earlier run left uncertain, send, retry deferred copies, finish."""
        self.summary.skipped = self.count_done_before()
        await self._resolve_uncertain()
        await self._backfill()
        for attempt in range(1 + self.config.digest.retry_passes):
            if attempt:
                if self.stopping.is_set() or not self._has_deferred():
                    break
                await asyncio.sleep(self.config.delivery.retry_base_seconds * attempt)  # backoff between passes
                self.summary.deferred = 0
            await self._pass()
        await self._settle()
        self.summary.finished = await self.writer.run(finish, self.digest.id, iso(self.clock()))
        return self.summary

    def _has_deferred(self) -> bool:
        return bool(self.reader.execute(
            "SELECT 1 FROM digest_sends WHERE digest_id = ? AND status = 'deferred' LIMIT 1", [self.digest.id]
        ).fetchone())

    async def _resolve_uncertain(self) -> None:
        """Ask the transport about copies an earlier run left 'sending' (a Maildir can tell)."""
        rows = self.reader.execute(
            "SELECT subscriber_id FROM digest_sends WHERE digest_id = ? AND status = 'sending'", [self.digest.id]
        ).fetchall()
        for (subscriber_id,) in rows:
            arrived = self.transport.delivered(delivery_key(self.digest.id, subscriber_id))
            if arrived is None:
                self.summary.uncertain += 1
                self.summary.skipped -= 1  # counted as uncertain, not as skipped
                log.warning("digest %d, subscriber %d: an earlier run was stopped while handing it over; "
                            "the relay may have it, so it is not sent again", self.digest.id, subscriber_id)
                continue
            status = "sent" if arrived else "deferred"
            await self.writer.run(record, self.digest.id, subscriber_id, status,
                                  "checked after a restart: " + ("in the Maildir" if arrived else "not delivered"),
                                  iso(self.clock()), False)
            if not arrived:
                self.summary.skipped -= 1

    async def _backfill(self) -> None:
        """Archive copies an earlier run logged but was killed before archiving."""
        while True:
            rows = self.reader.execute(
                "SELECT s.id, s.email FROM digest_sends d JOIN subscribers s ON s.id = d.subscriber_id "
                "WHERE d.digest_id = ? AND d.status IN ('sending', 'sent') AND d.message_id IS NULL LIMIT 500",
                [self.digest.id],
            ).fetchall()
            if not rows:
                return
            copies = []
            for subscriber_id, address in rows:
                raw, _, signature = self._copy(subscriber_id, address)
                copies.append((subscriber_id, address, len(raw), hashlib.sha256(raw).hexdigest(), signature))
            await self.writer.run(archive_copies, self.digest.id, self._archive, copies, iso(self.clock()))

    async def _pass(self) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.config.digest.batch_size)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.digest.concurrency)]
        try:
            last_id = 0
            while not self.stopping.is_set():
                batch = self._batch(last_id)
                if not batch:
                    break
                for subscriber in batch:
                    if self.stopping.is_set():
                        break
                    await queue.put(subscriber)
                last_id = batch[-1][0]
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)

    def _batch(self, after_id: int) -> list[tuple[int, str]]:
        return self.reader.execute(
            "SELECT s.id, s.email FROM subscribers s WHERE s.status = 'confirmed' AND s.id > ? "
            "AND NOT EXISTS (SELECT 1 FROM digest_sends d WHERE d.digest_id = ? AND d.subscriber_id = s.id "
            "AND d.status != 'deferred') ORDER BY s.id LIMIT ?",
            [after_id, self.digest.id, self.config.digest.batch_size],
        ).fetchall()

    async def _worker(self, queue: asyncio.Queue) -> None:
        session = self.transport.session()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if self.stopping.is_set():
                    continue  # drain without sending: a stop finishes only what is in hand
                await self._pacer.wait()
                await self._send_one(session, *item)
        finally:
            await session.close()

    async def _send_one(self, session, subscriber_id: int, address: str) -> None:
        digest_id = self.digest.id
        if self.signer is None:
            raw, wire, signature = self._copy(subscriber_id, address)
        else:
            # In a thread: the RSA step releases the GIL, so signing one copy
            # overlaps with the other workers' SMTP (docs/dkim.md has the figures).
            raw, wire, signature = await asyncio.get_running_loop().run_in_executor(
                None, self._copy, subscriber_id, address)

        async def before_final_dot() -> None:
            if not await self.writer.run(checkpoint, digest_id, subscriber_id, iso(self.clock())):
                raise Skip()

        copy = Copy(raw, wire, self.frame.eight_bit, delivery_key(digest_id, subscriber_id))
        try:
            # Each copy's envelope sender names its subscriber (VERP), so a bounce
            # is theirs whatever address the bouncing server reports.
            answer = await session.send(copy, verp_address(self.config, self.key, subscriber_id), address,
                                        before_final_dot)
        except Skip:
            self.summary.skipped += 1
            self.progress("skipped", 1)
            return
        except PermanentFailure as exc:
            self._log(subscriber_id, "failed", str(exc))
            self.summary.failed += 1
            if len(self.summary.failures) < 100:
                self.summary.failures.append(f"{address}: {exc}")
            self.progress("failed", 1)
            return
        except TemporaryFailure as exc:
            self._log(subscriber_id, "deferred", str(exc))
            self.summary.deferred += 1
            self.progress("deferred", 1)
            return
        except Uncertain as exc:
            log.warning("digest %d to %s: %s; not resent", digest_id, address, exc)
            self._archive_later(subscriber_id, address, raw, signature)  # the relay may have it
            self.summary.uncertain += 1
            self.progress("uncertain", 1)
            return
        self._archive_later(subscriber_id, address, raw, signature)
        self._log(subscriber_id, "sent", answer)
        self.summary.sent += 1
        self.progress("sent", 1)

    def _log(self, subscriber_id: int, status: str, response: str) -> None:
        # Not awaited, and written in small batches: whatever the crash, a copy
        # whose row still says 'sending' is never sent again, so the answer
        # may ride a later commit.
        self._answers.append((self.digest.id, subscriber_id, status, response[:500], iso(self.clock())))
        self._flush_soon()

    def _copy(self, subscriber_id: int, address: str) -> tuple[bytes, bytes, bytes]:
        """One subscriber's copy: its bytes, the same dot-stuffed for DATA, and its DKIM-Signature (or b"")."""
        token = unsubscribe_token(self.key, subscriber_id)
        raw = self.frame.copy(address, subscriber_id, token)
        wire = self.frame.wire(address, subscriber_id, token)
        if self.signer is None:
            return raw, wire, b""
        # The signature never starts a line with a dot, so it goes before the stuffed copy as it is.
        signature = self.signer.signature(raw, at=self._signed_at)
        return signature + raw, signature + wire, signature

    def _archive_later(self, subscriber_id: int, address: str, raw: bytes, signature: bytes) -> None:
        self._copies.append((subscriber_id, address, len(raw), hashlib.sha256(raw).hexdigest(), signature))
        self._flush_soon()

    def _flush_soon(self) -> None:
        if len(self._answers) + len(self._copies) >= 256:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(0.05, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._answers and not self._copies:
            return
        answers, self._answers = self._answers, []
        copies, self._copies = self._copies, []
        future = asyncio.wrap_future(self.writer.submit(
            record_many, answers, self.digest.id, self._archive, copies, iso(self.clock())))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _settle(self) -> None:
        self._flush()
        if self._pending:
            await asyncio.gather(*list(self._pending))


async def run_digest(
    config: Config,
    *,
    period: str | None = None,
    clock: Clock,
    key: bytes,
    templates: jinja2.Environment | None = None,
    transport: DigestTransport | None = None,
    progress: Progress | None = None,
    on_start: Callable[[Digest, int], None] | None = None,
    compose: bool = True,
    stopping: asyncio.Event | None = None,
    signer: Signer | None = None,
    since: str | None = None,
) -> Summary:
    """Compose (or resume) and send the digest for ``period``; the whole of ``digest send``.

    ``since`` (an ISO date, ``digest send --since``) lists the topics
    published from that day instead of those new since the last digest.

    ``signer``: the DKIM signer already loaded (``mailer serve`` has one);
    None reads ``[dkim]`` here, before anything is composed or sent.
    """
    from mailer.outbound.templating import template_environment

    if signer is None:
        signer = load_signer(config, clock=clock)  # a bad key stops the run before it starts (ConfigError)

    templates = templates or template_environment(config.templates_override())
    transport = transport or DigestTransport(config.delivery)
    writer = SendLogWriter(config.storage.database)
    writer.start()
    reader = open_database(config.storage.database, migrate=False)
    runner = f"{socket.gethostname()}:{os.getpid()}"
    if compose and config.topics.feed_url:
        # New pieces on the column's site belong in this digest: check the
        # feed first. A failed check is logged; the known topics still go out.
        from mailer.topics.feed import refresh_configured_feed

        await asyncio.get_running_loop().run_in_executor(
            None, lambda: refresh_configured_feed(config, clock=clock))
    try:
        opened = await writer.run(
            lambda db: open_digest(db, period=period, config=config, templates=templates, clock=clock,
                                   compose=compose, since=since))
        if opened.digest is None:
            log.info("%s", opened.reason, extra={"event": "digest_none", "period": period})
            return Summary(reason=opened.reason, finished=True)
        digest = opened.digest
        log.info("%s", opened.reason)
        await writer.run(claim, digest.id, runner, clock())
        run = DigestRun(digest, config=config, writer=writer, reader=reader, transport=transport,
                        key=key, clock=clock, progress=progress, stopping=stopping, signer=signer)
        renew = asyncio.create_task(_renew(writer, digest.id, runner, clock))
        try:
            if on_start is not None:
                on_start(digest, run.count_remaining())
            summary = await run.run()
        finally:
            renew.cancel()
            await writer.run(release, digest.id, runner)
        summary.reason = opened.reason
        log.info("digest %d (%s): %s%s", digest.id, digest.period, summary.line(),
                 "" if summary.finished else " - not finished",
                 extra={"event": "digest_run", "digest_id": digest.id, "period": digest.period,
                        "sent": summary.sent, "failed": summary.failed, "skipped": summary.skipped,
                        "deferred": summary.deferred, "uncertain": summary.uncertain,
                        "finished": summary.finished})
        return summary
    finally:
        reader.close()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)


async def send_test_copy(config: Config, email_address: str, *, clock: Clock, key: bytes,
                         since: str | None = None) -> str:
    """Send one copy of the next digest to ``email_address`` (the columnist), recording nothing.

    No digest row, no send log, no period marked sent: the real digest still
    goes out on schedule. Returns the relay's answer, or why there is no digest
    (as the text of a DigestError).
    """
    import secrets

    from mailer.newsletter.digest import DigestError, render_copy
    from mailer.outbound.delivery import make_transport
    from mailer.outbound.templating import template_environment

    db = open_database(config.storage.database)
    try:
        made = render_copy(db, config=config, templates=template_environment(config.templates_override()),
                           clock=clock, key=key, since=since, email_address=email_address)
    finally:
        db.close()
    if isinstance(made, str):
        raise DigestError(made)
    raw = made[0]
    signer = load_signer(config, clock=clock)
    if signer is not None:
        raw = signer.signature(raw, at=clock()) + raw
    transport = make_transport(config.delivery)
    return await transport.deliver(raw, config.addresses.bounces, [email_address], f"digest-test-{secrets.token_hex(6)}")


async def _renew(writer: DatabaseWriter, digest_id: int, runner: str, clock: Clock) -> None:
    while True:
        await asyncio.sleep(LEASE.total_seconds() / 3)  # keep the claim fresh while sending
        try:
            await writer.run(claim, digest_id, runner, clock())
        except Exception:  # noqa: BLE001 - a missed renewal is retried; the run goes on
            log.exception("could not renew the claim on digest %d", digest_id)
