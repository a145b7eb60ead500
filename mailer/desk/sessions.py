"""Desk logins kept on the server, so that logging out really ends them.

The browser holds a signed cookie; the cookie names a row of
``desk_sessions``. A login is valid only while its row is open, so logging
out (one row) or logging out everywhere (every row) ends it for a copy of
the cookie too, across restarts and across processes sharing the archive.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import threading
from pathlib import Path

import sqlite_utils

from mailer.store.db import StorageError, open_readonly


def new_session_id() -> str:
    """An unguessable id for a new login."""
    return secrets.token_urlsafe(24)


def open_session(db: sqlite_utils.Database, *, session_id: str, now: dt.datetime) -> None:
    """Record a new login (run on the archive writer)."""
    db.execute("INSERT INTO desk_sessions (id, opened_at) VALUES (?, ?)", [session_id, now.isoformat()])


def revoke_session(db: sqlite_utils.Database, *, session_id: str, now: dt.datetime) -> None:
    """End one login (run on the archive writer)."""
    db.execute("UPDATE desk_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
               [now.isoformat(), session_id])


def revoke_all_sessions(db: sqlite_utils.Database, *, now: dt.datetime) -> int:
    """End every login (run on the archive writer); returns how many were open."""
    return db.execute("UPDATE desk_sessions SET revoked_at = ? WHERE revoked_at IS NULL",
                      [now.isoformat()]).rowcount


class SessionRegister:
    """Answers "is this login still open?" from its own read-only connection.

    One primary-key lookup per desk request; WAL lets it read beside the
    writer. A lock guards the shared connection.
    """

    def __init__(self, database: Path | str) -> None:
        self.database = database
        self._db: sqlite_utils.Database | None = None
        self._lock = threading.Lock()

    def is_open(self, session_id) -> bool:
        """Whether ``session_id`` names a login that has not been revoked."""
        if not isinstance(session_id, str) or not session_id:
            return False
        with self._lock:
            try:
                if self._db is None:
                    self._db = open_readonly(self.database)
                row = self._db.execute(
                    "SELECT revoked_at IS NULL FROM desk_sessions WHERE id = ?", [session_id]).fetchone()
            except (sqlite3.Error, StorageError):
                self._close()
                return False  # no archive, or no table yet: nobody is logged in
        return bool(row and row[0])

    def _close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None
