"""Opening the SQLite archive: pragmas, and the versioned schema migrations.

The database is the one place mail lives, so it is opened the same way by
every part of the program: WAL so readers (the desk, the CLI) never block the
listener, ``synchronous=FULL`` so that a commit has reached the disk before the
listener answers 250 (NORMAL would survive ``kill -9`` but not a power cut,
and a 250 is a promise to the sending server that we now own the letter).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import sqlite_utils

from mailer.store import migrations

BUSY_TIMEOUT_MS = 10_000


class StorageError(Exception):
    """The archive cannot be opened or written."""


class DatabaseMissing(StorageError):
    """There is no archive at the configured path (and a read-only open makes none)."""


class SchemaBehind(StorageError):
    """The archive lacks migrations this program has (and a read-only open applies none)."""


class ArchiveDatabase(sqlite_utils.Database):
    """sqlite-utils' Database whose outermost ``atomic()`` takes the write lock at once.

    sqlite-utils begins with a plain (deferred) ``BEGIN``. Several processes
    write this file (``mailer serve``, the CLI, a digest run), and a deferred
    transaction that has read and then wants to write, after another
    connection committed, fails at once with "database is locked": SQLite
    cannot wait there without breaking isolation, so the busy timeout never
    applies. ``BEGIN IMMEDIATE`` waits for the lock first (up to
    BUSY_TIMEOUT_MS), so the transaction cannot be refused half-way.
    """

    @contextlib.contextmanager
    def atomic(self):
        """A transaction holding the write lock from its start (nested blocks: savepoints)."""
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.rollback()
            raise


def open_database(path: Path | str, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the archive at ``path`` and bring its schema up to date."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open the database {path}: {exc}") from exc
    db = ArchiveDatabase(conn)
    try:
        configure_connection(db)
        if migrate:
            migrations.migrate(db)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot prepare the database {path}: {exc}") from exc
    return db


def open_readonly(path: Path | str) -> sqlite_utils.Database:
    """Open the archive at ``path`` for reading only: never create, migrate or write it.

    For commands that only look (``mailer status``, listings): a mistyped
    ``--config`` must not leave a new empty archive behind and report it as
    healthy, and a command run as root must not migrate the live archive.
    Raises DatabaseMissing when there is no file, SchemaBehind when it needs
    migrations, StorageError when it cannot be read.

    The connection is SQLite's ``mode=ro``, which still reads what the
    write-ahead log holds. For that it needs the ``-shm`` file: it uses the
    one a running ``mailer serve`` keeps, or creates it (and an empty
    ``-wal``) beside a stopped archive, where they stay until the next
    writer closes; the archive file itself is never written. A user who may
    not create files in the archive's folder can therefore read it only
    while ``mailer serve`` runs.
    """
    path = Path(path)
    if not path.is_file():
        raise DatabaseMissing(f"there is no database at {path}")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the database {path} for reading: {exc}") from exc
    try:
        db = sqlite_utils.Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        missing = migrations.pending(db)
        have = migrations.current_version(db)
    except sqlite3.Error as exc:
        conn.close()
        shm = path.with_name(path.name + "-shm")
        cannot_make_shm = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY") and not shm.exists()
        hint = "" if not cannot_make_shm else (
            f" (with `mailer serve` stopped, reading it needs permission to create {shm.name} "
            "in its folder: run this as the user `mailer serve` runs as)"
        )
        raise StorageError(f"cannot read the database {path}: {exc}{hint}") from exc
    if missing:
        conn.close()
        raise SchemaBehind(
            f"the database {path} is older than this program (schema version {have}, "
            f"migration{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} pending); "
            "it was not changed: `mailer serve` migrates it when it starts"
        )
    return db


def configure_connection(db: sqlite_utils.Database) -> None:
    """Apply the pragmas every connection to the archive needs."""
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":  # pragma: no cover - only on filesystems without shared memory
        raise StorageError(f"the database refused WAL mode (got {mode!r})")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")


def schema_version(db: sqlite_utils.Database) -> int:
    """The number of the last migration applied to this database."""
    return migrations.current_version(db)



def ping(path: Path | str, *, timeout: float = 2.0) -> None:
    """Read from the archive on a connection of its own; raise StorageError if it does not answer.

    For health checks: it never creates, migrates or writes the file (a
    missing file is an error here, not a new empty archive), and it reads a
    real page of it, because ``SELECT 1`` alone succeeds without ever
    opening the file.
    """
    uri = Path(path).resolve().as_uri() + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the database {path}: {exc}") from exc
    try:
        conn.execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"the database {path} does not answer: {exc}") from exc
    finally:
        conn.close()
