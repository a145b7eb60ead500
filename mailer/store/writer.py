"""One thread that does every write to the archive, many writes per commit.

SQLite allows one writer at a time, and with ``synchronous=FULL`` every commit
costs an fsync. Sixteen readers' servers delivering at once would queue on
that fsync one by one; instead the writer takes whatever work is waiting,
runs each piece in its own savepoint (so one failure does not spoil the
others), and commits the lot once. Each caller is answered only after that
commit returns, which is what lets the listener say 250 honestly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from mailer.store.db import BUSY_TIMEOUT_MS, StorageError, open_database

log = logging.getLogger(__name__)

_STOP = object()

#: How often a writer whose lock another connection holds asks again. SQLite's
#: own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries, so a
#: lock held for 12 ms cost the listener's letters 18 ms and one held for 20
#: ms cost 33 (seen as waits of 33, 53 and 78 ms with the pipeline worker
#: writing beside the listener); asking every half millisecond ends the wait
#: within half a millisecond of the lock's release, for a few microseconds a try.
LOCK_POLL_SECONDS = 0.0005


class DatabaseWriter:
    """Serialises write transactions onto one connection, with group commit."""

    def __init__(self, path: Path, *, max_batch: int = 128) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite_utils.Database | None = None
        #: time.monotonic() when the batch being written began; None between batches.
        self._batch_started: float | None = None
        #: Batches that waited 1 ms or more to take the write lock (held by another
        #: connection: the pipeline worker, a command; or the thread was not
        #: scheduled), and the longest such wait in seconds.
        self.lock_waits = 0
        self.longest_lock_wait = 0.0

    def busy_seconds(self) -> float:
        """How long the batch being written has held the write lock so far (0 when idle).

        For ``/healthz``: a writer stuck in one batch holds every letter's 250.
        """
        started = self._batch_started
        return 0.0 if started is None else max(0.0, time.monotonic() - started)

    def start(self) -> None:
        """Open the database (migrating it) and start the writer thread."""
        self._db = open_database(self.path)
        self._thread = threading.Thread(target=self._loop, name="mailer-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Queue ``fn(db, *args)`` to run in a write transaction; returns its future."""
        if self._thread is None or not self._thread.is_alive():
            raise StorageError("the archive writer is not running")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(db, *args)`` in a committed write transaction and return its result."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued work, then close the database cleanly."""
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                break
            batch = [job]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            self._batch_started = time.monotonic()
            try:
                self._run_batch(batch)
            finally:
                self._batch_started = None
            if stopping:
                break
        self._close()

    def _run_batch(self, batch: list) -> None:
        outcomes: list[tuple[concurrent.futures.Future, Any, BaseException | None]] = []
        try:
            db = self._connection()
            self._begin(db)
            for future, fn, args in batch:
                try:
                    with db.atomic():  # a savepoint: one bad job cannot spoil the batch
                        outcomes.append((future, fn(db, *args), None))
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    outcomes.append((future, None, exc))
            db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - the commit itself failed: nobody got stored
            log.error("archive write failed: %s", exc)
            self._discard_connection()
            for future, _, _ in batch:
                _settle(future, None, exc)
            return
        for future, result, error in outcomes:
            _settle(future, result, error)

    def _begin(self, db: sqlite_utils.Database) -> None:
        """``BEGIN IMMEDIATE``, asking again every LOCK_POLL_SECONDS while another connection writes."""
        asked = time.monotonic()
        deadline = asked + BUSY_TIMEOUT_MS / 1000
        db.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                        raise
                time.sleep(LOCK_POLL_SECONDS)  # waiting for another process's commit, not for work
        finally:
            # Inside the transaction SQLite's own timeout applies again (a
            # checkpoint, say); only taking the lock is polled.
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._note_lock_wait(time.monotonic() - asked)

    def _note_lock_wait(self, waited: float) -> None:
        # Taking a free lock costs microseconds; a millisecond means another
        # connection held it, and every letter of this batch waited with us.
        if waited >= 0.001:
            self.lock_waits += 1
            self.longest_lock_wait = max(self.longest_lock_wait, waited)

    def _connection(self) -> sqlite_utils.Database:
        # After a failure (disk full, file made read-only) the connection is
        # reopened on the next batch, so the listener recovers by itself.
        if self._db is None:
            self._db = open_database(self.path)
        return self._db

    def _discard_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.conn.rollback()
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _close(self) -> None:
        if self.lock_waits:
            log.info("the archive writer waited 1 ms or more for the write lock %d times (another connection "
                     "held it, or this thread waited for the CPU), the longest %.1f ms",
                     self.lock_waits, self.longest_lock_wait * 1000,
                     extra={"event": "writer_lock_waits", "waits": self.lock_waits,
                            "longest_ms": round(self.longest_lock_wait * 1000, 1)})
        if self._db is not None:
            try:
                # Fold the WAL back into the main file so a copied .db is complete.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None


def _settle(future: concurrent.futures.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
