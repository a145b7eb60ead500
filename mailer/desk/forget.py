"""Forgetting a correspondent: every row, index entry and file that holds their address."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import sqlite_utils

from mailer.desk.errors import DeskError

#: Column names that hold an email address, found in any table by ``forget``.
ADDRESS_COLUMN = re.compile(
    r"^(e?mail|e_?mail_.*|.*_e_?mails?|.*_address(es)?|address(es)?|.*_addrs?|addrs?|"
    r"correspondent|recipients?|rcpt_?to|mail_?from|reply_?to|sender|subscriber)$",
    re.IGNORECASE,
)
_ADDRESS_COLUMNS: dict[str, set[str]] = {}
_ERASERS: list[Callable[[sqlite_utils.Database, str], dict[str, int]]] = []


def register_address_columns(table: str, *columns: str) -> None:
    """Tell ``forget`` that ``table.column`` holds addresses, whatever the column is called."""
    _ADDRESS_COLUMNS.setdefault(table, set()).update(columns)


def register_eraser(fn: Callable[[sqlite_utils.Database, str], dict[str, int]]) -> None:
    """Add ``fn(db, address) -> {table: rows removed}`` for data ``forget`` cannot find itself."""
    _ERASERS.append(fn)


@dataclass
class ForgetReport:
    """What forgetting one address removed (or would remove), table by table."""

    address: str
    removed: dict[str, int] = field(default_factory=dict)
    threads_emptied: list[int] = field(default_factory=list)
    #: Rows of other people that still mention the address in their text, by table.
    mentions: dict[str, list] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.removed.values())


class _Rollback(Exception):
    pass


def forget(
    db: sqlite_utils.Database, address: str, *, dry_run: bool = False, protected: frozenset[str] = frozenset()
) -> ForgetReport:
    """Erase every row of one correspondent, in every table; return what was removed.

    Rows go when any address-like column (found by name in every table, see
    ADDRESS_COLUMN, plus register_address_columns) holds the address, alone,
    in a JSON list or as ``Name <address>``; rows that point at them by
    foreign key go first, so messages take their raw bytes, outbox rows and
    full-text entries with them (the FTS triggers delete index rows), and
    threads of the correspondent take all their messages. Threads left empty
    are removed; the rest are recounted. The full-text index is then
    optimised and ``secure_delete`` is on, so the words are gone from the
    file's pages too, not just hidden. ``dry_run`` reports without removing.
    The column's own addresses (``protected``) cannot be forgotten.
    """
    email = normalize_address(address)
    if email in {a.casefold() for a in protected}:
        raise DeskError(f"{email} is one of the column's own addresses; it cannot be forgotten")
    report = ForgetReport(email, dry_run=dry_run)
    previous = db.execute("PRAGMA secure_delete").fetchone()[0]
    db.execute("PRAGMA secure_delete = ON")
    try:
        with db.atomic():
            _erase_all(db, email, report)
            report.mentions = mentions(db, email)
            if dry_run:
                raise _Rollback  # undo everything: the report is the answer
            for fts in _fts_tables(db):
                db.execute(f"INSERT INTO [{fts}] ([{fts}]) VALUES ('optimize')")
    except _Rollback:
        pass
    finally:
        db.execute(f"PRAGMA secure_delete = {int(previous)}")
    return report


class ErasureIncomplete(DeskError):
    """The rows are gone, but old copies of their pages are still in the write-ahead log."""


def flush_write_ahead_log(db: sqlite_utils.Database, *, deadline_seconds: float = 10.0,
                          clock=time.monotonic, pause=time.sleep) -> None:
    """Copy the WAL into the database file and empty it, or raise ErasureIncomplete.

    Deleted rows leave their old page images in ``mailer.db-wal`` until a
    checkpoint has copied everything back and truncated it. SQLite reports a
    checkpoint blocked by a reader's snapshot as a result row (busy = 1), not
    as an error, so the row is checked and the checkpoint retried until the
    deadline: a reader's snapshot usually lasts a moment.
    """
    end = clock() + max(0.0, deadline_seconds)
    previous_timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
    try:
        _checkpoint_until(db, end, clock, pause)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(previous_timeout)}")


def _checkpoint_until(db: sqlite_utils.Database, end: float, clock, pause) -> None:
    while True:
        # TRUNCATE waits in SQLite's busy handler for readers to move on.
        db.execute(f"PRAGMA busy_timeout = {max(0, int((end - clock()) * 1000))}")
        try:
            busy, log_frames, copied = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except Exception as exc:  # noqa: BLE001 - "database is locked" is the same story as busy
            busy, reason = 1, str(exc)
        else:
            reason = f"{copied} of {log_frames} page(s) copied back" if log_frames >= 0 else "busy"
        if not busy:
            return
        if clock() >= end:
            raise ErasureIncomplete(
                "the erasure is incomplete: the rows are deleted, but old copies of them are still in "
                f"the database's write-ahead log ({_file_of(db)}-wal; "
                f"{reason}) because another program is reading the archive. Stop `mailer serve` and any "
                "other program that has the archive open, then run the same `mailer forget` command "
                "again: it finishes the erasure."
            )
        pause(0.05)


def _file_of(db: sqlite_utils.Database) -> str:
    return db.execute("PRAGMA database_list").fetchone()[2]


def normalize_address(address: str) -> str:
    """The form addresses are compared in: trimmed, without <>, casefolded."""
    email = (address or "").strip().strip("<>").strip().casefold()
    if not email or "@" not in email or any(ch.isspace() for ch in email):
        raise DeskError(f"not an email address: {address!r}")
    return email


def _erase_all(db: sqlite_utils.Database, email: str, report: ForgetReport) -> None:
    tables = _plain_tables(db)
    touched_threads: set[int] = set()
    if "threads" in tables and "messages" in tables:
        where, params = _address_condition(db, "messages", email)
        if where:
            touched_threads.update(r[0] for r in db.execute(
                f"SELECT DISTINCT thread_id FROM messages WHERE {where}", params))
        touched_threads.update(r[0] for r in db.execute(
            "SELECT id FROM threads WHERE lower(correspondent) = ?", [email]))
    for table in tables:
        where, params = _address_condition(db, table, email)
        if where:
            _delete_where(db, table, where, params, report, path=())
    for eraser in _ERASERS:
        for table, count in (eraser(db, email) or {}).items():
            report.removed[table] = report.removed.get(table, 0) + count
    for thread_id in sorted(touched_threads):
        left = db.execute(
            "SELECT count(*), max(created_at), coalesce(max(direction = 'inbound' AND kind = 'letter'), 0) "
            "FROM messages WHERE thread_id = ?", [thread_id]
        ).fetchone()
        if left[0] == 0:
            cursor = db.execute("DELETE FROM threads WHERE id = ?", [thread_id])
            if cursor.rowcount:
                report.threads_emptied.append(thread_id)
                report.removed["threads"] = report.removed.get("threads", 0) + cursor.rowcount
        else:
            # A thread that lost its only letter leaves the desk's views.
            db.execute("UPDATE threads SET message_count = ?, last_message_at = ?, has_letter = ? WHERE id = ?",
                       [left[0], left[1], left[2], thread_id])
    report.removed = {t: n for t, n in report.removed.items() if n}


def _address_condition(db: sqlite_utils.Database, table: str, email: str) -> tuple[str, list]:
    """SQL matching rows of ``table`` whose address columns hold ``email``."""
    columns = [c.name for c in db[table].columns
               if ADDRESS_COLUMN.match(c.name) or c.name in _ADDRESS_COLUMNS.get(table, ())]
    clauses, params = [], []
    for column in columns:
        col = f"[{column}]"
        clauses.append(
            f"(typeof({col}) = 'text' AND (lower(trim({col})) = ? "
            f"OR instr(lower({col}), ?) > 0 "
            f"OR (json_valid({col}) AND json_type({col}) = 'array' AND EXISTS "
            f"(SELECT 1 FROM json_each({col}) WHERE lower(trim(json_each.value)) = ?))))"
        )
        params += [email, f"<{email}>", email]
    return " OR ".join(clauses), params


def _delete_where(db, table: str, where: str, params: list, report: ForgetReport, path: tuple) -> None:
    """Delete matching rows of ``table``, and first every row that references them."""
    if table in path or len(path) > 8:
        return
    for child, from_col, to_col in _referencing(db, table):
        target = to_col or _primary_key(db, table)
        _delete_where(
            db, child, f"[{from_col}] IN (SELECT [{target}] FROM [{table}] WHERE {where})",
            params, report, path + (table,),
        )
    cursor = db.execute(f"DELETE FROM [{table}] WHERE {where}", params)
    if cursor.rowcount > 0:
        report.removed[table] = report.removed.get(table, 0) + cursor.rowcount


def _referencing(db, table: str) -> list[tuple[str, str, str | None]]:
    found = []
    for other in _plain_tables(db):
        for fk in db.execute(f"PRAGMA foreign_key_list([{other}])").fetchall():
            # id, seq, table, from, to, on_update, on_delete, match
            if fk[2] == table:
                found.append((other, fk[3], fk[4]))
    return found


def _primary_key(db, table: str) -> str:
    pks = [c.name for c in db[table].columns if c.is_pk]
    return pks[0] if len(pks) == 1 else "rowid"


def _plain_tables(db: sqlite_utils.Database) -> list[str]:
    """Ordinary tables: no virtual tables, no FTS shadow tables, no bookkeeping."""
    virtual = _fts_tables(db)
    shadow_suffixes = ("_data", "_idx", "_content", "_docsize", "_config")
    tables = []
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        if name.startswith("sqlite_") or name == "schema_migrations" or name in virtual:
            continue
        if any(name == v + s for v in virtual for s in shadow_suffixes):
            continue
        tables.append(name)
    return tables


def _without_rowid(db: sqlite_utils.Database, table: str) -> bool:
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone()[0] or ""
    return "WITHOUT ROWID" in " ".join(sql.upper().split())


def _fts_tables(db: sqlite_utils.Database) -> list[str]:
    return [name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%fts5%'"
    )]


def mentions(db: sqlite_utils.Database, email: str) -> dict[str, list]:
    """Rows that mention ``email`` anywhere in their text: {table: [rowid or thread id]}.

    For messages the thread ids are given, which is what a columnist can open.
    """
    found: dict[str, list] = {}
    for table in _plain_tables(db):
        columns = [c.name for c in db[table].columns if c.type.upper() in ("TEXT", "BLOB", "")]
        if not columns:
            continue
        where = " OR ".join(f"instr(lower(CAST([{c}] AS TEXT)), ?) > 0" for c in columns)
        key = "thread_id" if table == "messages" else "rowid"
        if table != "messages" and _without_rowid(db, table):
            key = " || '/' || ".join(f"[{c.name}]" for c in db[table].columns if c.is_pk) or "NULL"
        ids = [r[0] for r in db.execute(
            f"SELECT DISTINCT {key} FROM [{table}] WHERE {where} LIMIT 50", [email] * len(columns))]
        if ids:
            found[table] = ids
    return found
