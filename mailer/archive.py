"""The archive: every message in and out, threaded and searchable.

Functions here take a ``sqlite_utils.Database`` and run inside whatever
transaction the caller holds (they use ``db.atomic()``, which nests as a
savepoint), so the listener can commit a whole batch of letters at once and
the policy can archive a reply in the same transaction that queues it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field

import sqlite_utils

from .clock import Clock, iso
from .parsing import ParsedMessage, parse_message

#: Kinds of message the archive knows. Inbound: what arrived at which address.
INBOUND_KINDS = ("letter", "subscribe", "unsubscribe", "bounce", "postmaster")
OUTBOUND_KINDS = ("acknowledgement", "reply", "confirmation", "notice", "digest")
THREAD_STATUSES = ("new", "answered", "archived")

#: How long a reply that lost its threading headers may still join by subject.
SUBJECT_FALLBACK_DAYS = 180

_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|sv|wg|antw|vs|ref|tr)\s*(?:\[\d+\])?\s*[:：]\s*)+", re.IGNORECASE
)


class SearchSyntaxError(ValueError):
    """A full-text query the index could not understand; the message says why."""


#: How SQLite's FTS5 words a query it cannot parse. An unbalanced double quote
#: ("unterminated string") or a lone "*" is an easy thing for a columnist to type.
_FTS_QUERY_ERRORS = (
    "fts5", "syntax error", "no such column", "unterminated string",
    "unknown special query", "expected integer",
)


@dataclass(frozen=True)
class Envelope:
    """What the SMTP conversation told us, beside the message itself."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    peer: str = ""


@dataclass(frozen=True)
class Stored:
    """The outcome of archiving one message."""

    message_id: int
    thread_id: int
    duplicate: bool = False
    parsed: ParsedMessage | None = field(default=None, compare=False, repr=False)


def normalize_subject(subject: str) -> str:
    """The subject without reply/forward prefixes, casefolded, for thread matching."""
    return " ".join(_REPLY_PREFIX.sub("", subject or "").split()).casefold()


def has_reply_prefix(subject: str) -> bool:
    """Whether ``subject`` starts with Re:, Fwd: or a localised equivalent."""
    return bool(_REPLY_PREFIX.match(subject or ""))


def store_inbound(
    db: sqlite_utils.Database,
    raw: bytes,
    envelope: Envelope,
    *,
    kind: str,
    clock: Clock,
) -> Stored:
    """Archive a message that arrived over SMTP, exactly as received.

    A retry of a message we already hold (same Message-ID, same bytes) is not
    stored twice: the existing row is returned with ``duplicate=True``.
    """
    sha = hashlib.sha256(raw).hexdigest()
    parsed = parse_message(raw)
    if parsed.message_id:
        existing = db.execute(
            "SELECT id, thread_id FROM messages WHERE raw_sha256 = ? AND message_id = ? "
            "AND direction = 'inbound'",
            [sha, parsed.message_id],
        ).fetchone()
        if existing:
            return Stored(existing[0], existing[1], duplicate=True, parsed=parsed)
    correspondent = (parsed.from_addr or envelope.mail_from or "").casefold()
    now = iso(clock())
    with db.atomic():
        thread_id = _thread_for(db, parsed, correspondent, now, clock)
        message_id = _insert(
            db, parsed, raw, sha,
            direction="inbound", kind=kind, created_at=now, correspondent=correspondent,
            mail_from=envelope.mail_from, rcpt_to=list(envelope.rcpt_tos), peer=envelope.peer,
            thread_id=thread_id, processed_at=None,
            meta={"delivery_report": True} if parsed.is_delivery_report else {},
        )
        _touch_thread(db, thread_id, now, reopen=(kind == "letter"))
    return Stored(message_id, thread_id, parsed=parsed)


def store_outbound(
    db: sqlite_utils.Database,
    raw: bytes,
    *,
    kind: str,
    mail_from: str,
    rcpt_to: list[str],
    clock: Clock,
    thread_id: int | None = None,
    meta: dict | None = None,
) -> Stored:
    """Archive a message we are about to send, in its thread (or a new one)."""
    parsed = parse_message(raw)
    correspondent = (rcpt_to[0] if rcpt_to else "").casefold()
    now = iso(clock())
    with db.atomic():
        if thread_id is None:
            thread_id = _thread_for(db, parsed, correspondent, now, clock)
        message_id = _insert(
            db, parsed, raw, hashlib.sha256(raw).hexdigest(),
            direction="outbound", kind=kind, created_at=now, correspondent=correspondent,
            mail_from=mail_from, rcpt_to=rcpt_to, peer="", thread_id=thread_id,
            processed_at=now, meta=meta or {},
        )
        _touch_thread(db, thread_id, now, reopen=False)
    return Stored(message_id, thread_id, parsed=parsed)


def _insert(db, parsed: ParsedMessage, raw: bytes, sha: str, **columns) -> int:
    row = {
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references_ids": json.dumps(parsed.references),
        "from_addr": parsed.from_addr,
        "from_name": parsed.from_name,
        "to_addrs": json.dumps(parsed.to_addrs),
        "reply_to": parsed.reply_to,
        "subject": parsed.subject,
        "date": parsed.date,
        "auto_submitted": parsed.auto_submitted,
        "list_id": parsed.list_id,
        "precedence": parsed.precedence,
        "headers": json.dumps(parsed.headers, ensure_ascii=False),
        "body_text": parsed.body_text,
        "attachments": json.dumps(parsed.attachments),
        "size": len(raw),
        "raw_sha256": sha,
        "parse_error": parsed.error or (("defects: " + ", ".join(parsed.defects[:20])) if parsed.defects else None),
        "disposition": None,
    }
    row.update(columns)
    row["rcpt_to"] = json.dumps(row["rcpt_to"])
    row["meta"] = json.dumps(row["meta"])
    names = list(row)
    cursor = db.execute(
        f"INSERT INTO messages ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
        [row[n] for n in names],
    )
    message_id = cursor.lastrowid
    db.execute("INSERT INTO raw_messages (id, raw) VALUES (?, ?)", [message_id, raw])
    return message_id


def _thread_for(db, parsed: ParsedMessage, correspondent: str, now: str, clock: Clock) -> int:
    """Find the thread a message belongs to, or start one.

    First by the Message-IDs it answers (In-Reply-To, then References, newest
    first); when a reply lost those headers, by its normalised subject and
    correspondent within the last SUBJECT_FALLBACK_DAYS.
    """
    candidates = [parsed.in_reply_to] if parsed.in_reply_to else []
    candidates += list(reversed(parsed.references))
    for ref in candidates:
        row = db.execute(
            "SELECT thread_id FROM messages WHERE message_id = ? ORDER BY id LIMIT 1", [ref]
        ).fetchone()
        if row:
            return row[0]
    key = normalize_subject(parsed.subject)
    if key and correspondent and has_reply_prefix(parsed.subject):
        since = iso(clock() - dt.timedelta(days=SUBJECT_FALLBACK_DAYS))
        row = db.execute(
            "SELECT id FROM threads WHERE subject_key = ? AND correspondent = ? "
            "AND last_message_at >= ? ORDER BY last_message_at DESC LIMIT 1",
            [key, correspondent, since],
        ).fetchone()
        if row:
            return row[0]
    cursor = db.execute(
        "INSERT INTO threads (subject, subject_key, correspondent, status, urgent, "
        "created_at, last_message_at, message_count) VALUES (?, ?, ?, 'new', 0, ?, ?, 0)",
        [parsed.subject, key, correspondent, now, now],
    )
    return cursor.lastrowid


def _touch_thread(db, thread_id: int, now: str, *, reopen: bool) -> None:
    # A reader writing again puts an answered or archived thread back on the desk.
    db.execute(
        "UPDATE threads SET message_count = message_count + 1, last_message_at = max(last_message_at, ?)"
        + (", status = 'new'" if reopen else "")
        + " WHERE id = ?",
        [now, thread_id],
    )


def raw_bytes(db: sqlite_utils.Database, message_id: int) -> bytes:
    """The exact bytes of an archived message."""
    row = db.execute("SELECT raw FROM raw_messages WHERE id = ?", [message_id]).fetchone()
    if row is None:
        raise KeyError(message_id)
    return bytes(row[0])


def get_message(db: sqlite_utils.Database, message_id: int) -> dict | None:
    """One archived message as a dict (without its raw bytes)."""
    rows = list(db.query("SELECT * FROM messages WHERE id = ?", [message_id]))
    return rows[0] if rows else None


def get_thread(db: sqlite_utils.Database, thread_id: int) -> dict | None:
    """One thread's row, or None."""
    rows = list(db.query("SELECT * FROM threads WHERE id = ?", [thread_id]))
    return rows[0] if rows else None


def thread_messages(db: sqlite_utils.Database, thread_id: int) -> list[dict]:
    """Every message of a thread, oldest first, inbound and outbound."""
    return list(db.query(
        "SELECT * FROM messages WHERE thread_id = ? ORDER BY created_at, id", [thread_id]
    ))


def list_threads(
    db: sqlite_utils.Database,
    *,
    status: str | None = None,
    urgent: bool | None = None,
    since: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict]:
    """Threads for the inbox: urgent first, then new, then newest activity first."""
    if limit < 0 or offset < 0 or not _urgent_is_a_flag(db):
        return _list_threads_sorted(db, status=status, urgent=urgent, since=since, limit=limit, offset=offset)
    # The order is six runs, each a range of the threads_inbox index already
    # sorted by last_message_at, so each run is read only as far as the page
    # needs. One ORDER BY over all threads sorted every non-urgent thread for
    # any page past the urgent ones: at 158,000 threads the page at offset
    # 1,700 took 261 ms, now 1.2 ms (bench/archive.py).
    found: list[dict] = []
    for run_urgent, run_status in _INBOX_RUNS:
        if len(found) >= limit:
            break
        if status and run_status != status:
            continue
        if urgent is not None and run_urgent != (1 if urgent else 0):
            continue
        where, params = "urgent = ? AND status = ?", [run_urgent, run_status]
        if since:
            where += " AND last_message_at >= ?"
            params.append(since)
        if offset:
            size = db.execute(f"SELECT count(*) FROM threads WHERE {where}", params).fetchone()[0]
            if offset >= size:
                offset -= size
                continue
        found += db.query(
            f"SELECT * FROM threads WHERE {where} ORDER BY last_message_at DESC, id DESC LIMIT ? OFFSET ?",
            params + [limit - len(found), offset],
        )
        offset = 0
    return found


#: The inbox order, run by run: urgent before not, then new, answered, archived.
_INBOX_RUNS = [(urgent, status) for urgent in (1, 0) for status in THREAD_STATUSES]


def _urgent_is_a_flag(db: sqlite_utils.Database) -> bool:
    """Whether every thread's urgent is 0 or 1 (two index probes; anything else sorts the slow way)."""
    return db.execute("SELECT 1 FROM threads WHERE urgent < 0 OR urgent > 1 LIMIT 1").fetchone() is None


def _list_threads_sorted(db, *, status, urgent, since, limit, offset) -> list[dict]:
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if urgent is not None:
        where.append("urgent = ?")
        params.append(1 if urgent else 0)
    if since:
        where.append("last_message_at >= ?")
        params.append(since)
    sql = "SELECT * FROM threads"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += (
        " ORDER BY urgent DESC, CASE status WHEN 'new' THEN 0 WHEN 'answered' THEN 1 ELSE 2 END,"
        " last_message_at DESC, id DESC LIMIT ? OFFSET ?"
    )
    return list(db.query(sql, params + [limit, offset]))


def thread_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """How many threads are in each status, plus how many are urgent."""
    counts = {status: 0 for status in THREAD_STATUSES}
    if _urgent_is_a_flag(db):
        # One range count per status on the threads_inbox index: a GROUP BY
        # status cannot use it (status is its second column) and took 44-48 ms
        # on 158,000 threads; these take 11-13 ms (bench/archive.py).
        for status in THREAD_STATUSES:
            counts[status] = db.execute(
                "SELECT count(*) FROM threads WHERE urgent IN (0, 1) AND status = ?", [status]
            ).fetchone()[0]
    else:
        for status, n in db.execute("SELECT status, count(*) FROM threads GROUP BY status"):
            counts[status] = n
    counts["urgent"] = db.execute(
        "SELECT count(*) FROM threads WHERE urgent = 1 AND status != 'archived'"
    ).fetchone()[0]
    return counts


def search(db: sqlite_utils.Database, query: str, *, limit: int = 50) -> list[dict]:
    """Full-text search over subjects, bodies and senders, best matches first.

    Returns rows with a ``snippet`` in which matches are wrapped in ``[`` ``]``.
    Raises SearchSyntaxError with an explanation for a query FTS5 rejects.
    """
    query = (query or "").strip()
    if not query:
        raise SearchSyntaxError("the search is empty: give at least one word")
    # Ranking through FTS5's own rank column lets FTS5 sort the matches
    # itself, so the join and snippet() run for the rows returned only, not
    # for every match: 2-5x faster on a big archive, same rows, same order.
    sql = (
        "SELECT m.id, m.thread_id, m.direction, m.kind, m.created_at, m.from_addr, m.from_name, "
        "m.subject, snippet(messages_fts, 1, '[', ']', ' … ', 12) AS snippet, "
        "messages_fts.rank AS rank "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
        "WHERE messages_fts MATCH ? AND messages_fts.rank MATCH 'bm25(3.0, 1.0, 2.0, 2.0)' "
        "ORDER BY messages_fts.rank LIMIT ?"
    )
    try:
        return list(db.query(sql, [query, limit]))
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if any(marker in text for marker in _FTS_QUERY_ERRORS):
            raise SearchSyntaxError(
                f"cannot search for {query!r}: {text}. Put words or phrases in double quotes "
                f"to search for them literally, e.g. \"{query.replace(chr(34), '')}\""
            ) from None
        raise
