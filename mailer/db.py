"""Opening the SQLite archive: pragmas, and the versioned schema migrations.

The database is the one place mail lives, so it is opened the same way by
every part of the program: WAL so readers (the desk, the CLI) never block the
listener, ``synchronous=FULL`` so that a commit has reached the disk before the
listener answers 250 (NORMAL would survive ``kill -9`` but not a power cut,
and a 250 is a promise to the sending server that we now own the letter).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
import sqlite_utils

from . import migrations

BUSY_TIMEOUT_MS = 10_000


class StorageError(Exception):
    """The archive cannot be opened or written."""


def open_database(path: Path | str, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the archive at ``path`` and bring its schema up to date."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open the database {path}: {exc}") from exc
    db = sqlite_utils.Database(conn)
    try:
        configure_connection(db)
        if migrate:
            migrations.migrate(db)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot prepare the database {path}: {exc}") from exc
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
