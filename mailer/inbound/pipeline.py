"""What happens to a message after its bytes are safe.

The listener only keeps the bytes (``store.arrivals``) and answers 250;
everything else happens here. First each arrival is filed: parsed on a
thread of its own, outside any write transaction, then threaded, indexed and
moved into ``messages`` by the writer. Then each filed message is handled
(acknowledging a letter, confirming a subscription, counting a bounce) on
the writer thread, one message per savepoint. What handling computes from
the message alone (the crisis check, the topics, the acknowledgement's
rendering and building) is prepared first on the read connection, so the
write transaction, which the listener's next letter may be waiting for,
holds only the decisions that need the archive and the writes. A message is marked processed in
the same transaction as whatever it caused, so after a crash every stored
message is handled exactly once: on restart the pipeline picks up whatever
is still unprocessed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable, Container

import sqlite_utils

from mailer.clock import iso
from mailer.inbound.handling import Handler, PipelineContext, Preparer
from mailer.rules import crisis
from mailer.store import arrivals
from mailer.store.db import open_readonly
from mailer.store.parsing import parse_message
from mailer.store.writer import DatabaseWriter
from mailer.topics import themes

log = logging.getLogger("mailer.pipeline")

#: How often stored-but-unhandled messages are looked for without a new arrival.
RETRY_SECONDS = 30.0

#: Messages handled per write transaction at most. The listener's letters
#: wait behind a transaction on the one writer thread (an acknowledgement
#: costs several ms of CPU; 50 at a time held incoming letters back half a
#: second), so a batch goes on only while no sender is connected: the
#: writer looks before each message after the first, and stops as soon as a
#: sender appears. A batch shares one commit (its fsync and its CPU) among
#: its letters (docs/performance.md).
PER_TRANSACTION = 16

#: Letters whose senders are checked (concurrently) ahead of handling.
CHECK_AHEAD = 16


def letters_to_check(db: sqlite_utils.Database, limit: int = CHECK_AHEAD) -> list[dict]:
    """The next unhandled letters whose envelope sender has no SPF verdict yet."""
    return list(db.query(
        "SELECT id, peer, mail_from, meta FROM messages WHERE processed_at IS NULL AND direction = 'inbound' "
        "AND kind = 'letter' AND json_extract(meta, '$.spf') IS NULL ORDER BY id LIMIT ?", [limit],
    ))


def record_verdicts(db: sqlite_utils.Database, verdicts: dict[int, dict]) -> None:
    """Keep each letter's SPF verdict in its meta, where its handler reads it."""
    for message_id, verdict in verdicts.items():
        db.execute("UPDATE messages SET meta = json_set(meta, '$.spf', json(?)) WHERE id = ?",
                   [json.dumps(verdict), message_id])


#: While senders are connected the pipeline waits for a quiet moment, at most
#: this long a round: the listener shares the core (and the interpreter lock),
#: and a sender waiting for its 250 comes before an acknowledgement.
YIELD_SECONDS = 0.25

#: Arrivals parsed per round, then filed as one job each in the writer's next
#: batch (a savepoint each: one that fails does not hold back the others).
FILE_PER_ROUND = 16

def pending_messages(db: sqlite_utils.Database, limit: int) -> list[dict]:
    """The oldest ``limit`` inbound messages not handled yet."""
    return list(db.query(
        "SELECT * FROM messages WHERE processed_at IS NULL AND direction = 'inbound' ORDER BY id LIMIT ?",
        [limit],
    ))


def prepare_pending(
    db: sqlite_utils.Database, preparers: dict[str, Preparer], ctx: PipelineContext, limit: int,
    skip: Container[int] = (),
) -> dict[int, object]:
    """Run the preparers of the next ``limit`` unhandled messages on a read connection.

    Returns each prepared message's result by its id (those in ``skip`` are
    prepared already). A preparation that fails is left out: its handler
    then does the work itself, in its transaction, where a failure is
    recorded as the message's disposition.
    """
    prepared = {}
    for row in pending_messages(db, limit):
        prepare = preparers.get(row["kind"])
        if prepare is None or row["id"] in skip:
            continue
        try:
            prepared[row["id"]] = prepare(db, row, ctx)
        except Exception:  # noqa: BLE001 - handled (and recorded) in the transaction instead
            log.exception("message %d: preparing failed; handling it without", row["id"])
    return prepared


def process_pending(
    db: sqlite_utils.Database, handlers: dict[str, Handler], ctx: PipelineContext, limit: int = 50,
    go_on: Callable[[], bool] = lambda: True, prepared: dict[int, object] | None = None,
) -> int:
    """Handle up to ``limit`` unprocessed inbound messages; return how many were handled.

    ``go_on`` is asked before each message after the first; when it says no,
    the rest wait for the next call (the pipeline stops a batch when a sender
    connects, so its letter does not wait for the whole batch). ``prepared``
    holds what preparers computed before this transaction, by message id;
    each one used is taken out of it.
    """
    prepared = {} if prepared is None else prepared
    pending = pending_messages(db, limit)
    for done, row in enumerate(pending):
        if done and not go_on():
            return done
        handler = handlers.get(row["kind"])
        extra = (prepared.pop(row["id"]),) if row["id"] in prepared else ()
        try:
            with db.atomic():
                disposition = (handler(db, row, ctx, *extra) if handler
                               else f"kept: nothing automatic for {row['kind']}")
        except Exception as exc:  # noqa: BLE001 - keep the message, record why it was not handled
            log.exception("message %d: handling failed", row["id"])
            disposition = f"error: {type(exc).__name__}"
        db.execute(
            "UPDATE messages SET processed_at = ?, disposition = ? WHERE id = ?",
            [iso(ctx.clock()), disposition, row["id"]],
        )
        log.info("message %d (%s): %s", row["id"], row["kind"], disposition,
                 extra={"event": "message_processed", "archive_id": row["id"], "kind": row["kind"]})
    return len(pending)


class Pipeline:
    """Service component: runs ``process_pending`` whenever letters arrive (and at start).

    ``handlers`` maps a message's kind (the address it came to) to the
    function that handles it; the service registers them, so the pipeline
    knows nothing of the newsletter or any other stage above it.
    """

    def __init__(
        self,
        writer: DatabaseWriter,
        ctx: PipelineContext,
        *,
        handlers: dict[str, Handler],
        preparers: dict[str, Preparer] | None = None,
        on_processed: Callable[[], None] | None = None,
        sender_check=None,
    ) -> None:
        self.writer = writer
        self.preparers = preparers or {}
        # Prepared but not handled yet (a batch stopped for a sender), by id.
        self._prepared: dict[int, object] = {}
        #: An SpfChecker (``inbound/spf.py``), or None when a front MTA checks SPF.
        self.sender_check = sender_check
        self.ctx = ctx
        self.handlers = handlers
        self.on_processed = on_processed
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._reader = None
        # Whether letters may be waiting to be filed: set by the listener's
        # hook (and at start), so handling a backlog does not look for
        # arrivals before every acknowledgement.
        self._arrived = True
        #: Set by the service: whether the listener has senders connected now.
        self.listener_busy: Callable[[], bool] = lambda: False

    async def start(self) -> None:
        """Start, handling anything stored but not handled before a restart."""
        # Build the crisis prefilter and the topic themes' indexes now (about
        # 0.4 s together) rather than while the first letter after a start
        # is being handled and the next one waits behind it.
        crisis.warm_up()
        themes.warm_up()
        self._kick.set()
        self._task = asyncio.create_task(self._run(), name="pipeline")

    def message_stored(self, stored) -> None:
        """Service hook: a letter's bytes were kept; file and handle it soon."""
        self._arrived = True
        self._kick.set()

    async def stop(self) -> None:
        """Finish the batch in hand and stop."""
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            await self._task
        try:
            # Whatever was received is filed before the service stops (the
            # listener has stopped taking letters by now), so a stopped
            # archive holds no arrivals unless a filing failed.
            self._arrived = True
            while await self.file_arrivals():
                pass
        except Exception:  # noqa: BLE001 - they stay arrivals, filed at the next start
            log.exception("filing before the stop failed")
        self.close()

    async def _check_senders(self) -> None:
        """SPF for the next letters, before they are handled, off the writer thread.

        DNS can take seconds: the lookups run on worker threads, concurrently,
        and only the verdicts go through the writer. A letter whose check
        failed outright is handled without a verdict (as if unchecked).
        """
        if self.sender_check is None:
            return
        # Looked for on the pipeline's read connection: asking the writer
        # would cost a write transaction every round, and the listener's
        # letters would wait behind it, for nothing most of the time.
        letters = await asyncio.to_thread(self._letters_to_check)
        if not letters:
            return

        def check(row: dict) -> dict:
            helo = json.loads(row["meta"] or "{}").get("helo", "")
            return self.sender_check.check(row["peer"], row["mail_from"], helo).as_meta()

        results = await asyncio.gather(*(asyncio.to_thread(check, row) for row in letters),
                                       return_exceptions=True)
        verdicts = {row["id"]: r if isinstance(r, dict) else {"result": "temperror",
                                                               "explanation": type(r).__name__}
                    for row, r in zip(letters, results)}
        await self.writer.run(record_verdicts, verdicts)

    async def _run(self) -> None:
        while True:
            try:
                # The timeout is a safety net: after a failed run (say, a full
                # disk) pending letters are retried even if no new one arrives.
                await asyncio.wait_for(self._kick.wait(), timeout=RETRY_SECONDS)
            except asyncio.TimeoutError:
                self._arrived = True  # the safety net looks for arrivals too
            self._kick.clear()
            if self._stopping:
                return
            try:
                while True:
                    await self._quiet_moment()
                    filed = await self.file_arrivals()
                    await self._check_senders()
                    await self._prepare()
                    handled = await self.writer.run(process_pending, self.handlers, self.ctx, PER_TRANSACTION,
                                                    self._quiet, self._prepared)
                    if handled and self.on_processed:
                        self.on_processed()
                    if self._stopping or not (filed or handled):
                        break
                if self._stopping:
                    return
            except Exception:  # noqa: BLE001 - e.g. the disk is full; retried on the next letter
                log.exception("processing stored messages failed; will retry")

    async def _prepare(self) -> None:
        """Prepare the next batch on the read connection, off the writer (see ``inbound/handling``)."""
        if not self.preparers:
            return
        fresh = await asyncio.to_thread(
            self._prepare_pending, PER_TRANSACTION, frozenset(self._prepared)
        )
        self._prepared.update(fresh)

    def _prepare_pending(self, limit: int, skip: frozenset[int]) -> dict[int, object]:
        return prepare_pending(self._read_connection(), self.preparers, self.ctx, limit, skip)

    def _quiet(self) -> bool:
        # Asked on the writer thread between the messages of one batch.
        return not (self.listener_busy() or self._stopping)

    async def _quiet_moment(self) -> None:
        # Polled, not signalled: the listener's sessions come and go by the
        # hundred a second, and a wake-up for each would cost more than this.
        deadline = asyncio.get_running_loop().time() + YIELD_SECONDS
        while self.listener_busy() and not self._stopping and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)

    async def file_arrivals(self) -> int:
        """Parse the oldest arrivals off the writer, then file them; return how many were filed."""
        if not self._arrived:
            return 0
        self._arrived = False
        batch = await asyncio.to_thread(self._read_and_parse, FILE_PER_ROUND)
        if len(batch) == FILE_PER_ROUND:
            self._arrived = True  # there may be more
        futures = [self.writer.submit(_file, arrival_id, parsed, self.ctx.clock) for arrival_id, parsed in batch]
        filed = 0
        for arrival_id, future in zip((a for a, _ in batch), futures):
            try:
                await asyncio.wrap_future(future)
                filed += 1
            except Exception:  # noqa: BLE001 - it stays an arrival and is tried again
                self._arrived = True
                log.exception("arrival %d: filing failed; will retry", arrival_id)
        return filed

    def _letters_to_check(self) -> list[dict]:
        return letters_to_check(self._read_connection())

    def _read_connection(self) -> sqlite_utils.Database:
        # A read connection of the pipeline's own: arrivals are read and
        # parsed, and senders looked for, while the writer goes on committing.
        if self._reader is None:
            self._reader = open_readonly(self.writer.path)
        return self._reader

    def _read_and_parse(self, limit: int) -> list[tuple[int, object]]:
        return [(arrival_id, parse_message(raw))
                for arrival_id, raw in arrivals.unfiled(self._read_connection(), limit)]

    def close(self) -> None:
        """Close the pipeline's read connection."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _file(db: sqlite_utils.Database, arrival_id: int, parsed, clock):
    # Runs on the writer thread: only the writes, the parse was done before.
    return arrivals.file_arrival(db, arrival_id, parsed, clock=clock)
