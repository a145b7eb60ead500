"""The archive: every message in and out, threaded and searchable.

Functions here take a ``sqlite_utils.Database`` and run inside whatever
transaction the caller holds (they use ``db.atomic()``, which nests as a
savepoint), so the listener can commit a whole batch of letters at once and
the policy can archive a reply in the same transaction that queues it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import re
import sqlite3
from dataclasses import dataclass, field

import sqlite_utils

from mailer.clock import Clock, iso
from mailer.store.parsing import ParsedMessage, parse_message

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
    #: The TLS version of the session ("TLSv1.3"), or "" if it came in clear.
    tls: str = ""
    #: The name the client gave in HELO/EHLO (SPF checks a null sender by it).
    helo: str = ""


@dataclass(frozen=True)
class Stored:
    """The outcome of archiving one message."""

    message_id: int
    #: None for a letter received but not filed yet (``arrivals.receive``).
    thread_id: int | None
    duplicate: bool = False
    parsed: ParsedMessage | None = field(default=None, compare=False, repr=False)


def normalize_subject(subject: str) -> str:
    """The subject without reply/forward prefixes, casefolded, for thread matching."""
    return " ".join(_REPLY_PREFIX.sub("", subject or "").split()).casefold()


def has_reply_prefix(subject: str) -> bool:
    """Whether ``subject`` starts with Re:, Fwd: or a localised equivalent."""
    return bool(_REPLY_PREFIX.match(subject or ""))


def store_inbound(
    db: sqlite_utils.Database, raw: bytes, envelope: Envelope, *, kind: str, clock: Clock,
    parsed: ParsedMessage | None = None,
) -> Stored:
    """Archive and file a message that arrived over SMTP, exactly as received, in one go.

    (The listener keeps only the bytes before its 250, ``arrivals.receive``.)
    A retry of a message we hold (same Message-ID, same bytes) is not stored
    twice: the existing row is returned with ``duplicate=True``. ``parsed``:
    ``parse_message(raw)`` when the caller read it already.
    """
    sha = hashlib.sha256(raw).hexdigest()
    if parsed is None:
        parsed = parse_message(raw)
    existing = find_duplicate(db, parsed, sha)
    if existing:
        return existing
    return file_inbound(db, parsed, raw, sha, envelope, kind=kind, received_at=iso(clock()), clock=clock)


def find_duplicate(db: sqlite_utils.Database, parsed: ParsedMessage, sha: str) -> Stored | None:
    """The inbound message already filed with these bytes and this Message-ID, if any."""
    if not parsed.message_id:
        return None
    existing = db.execute(
        "SELECT id, thread_id FROM messages WHERE raw_sha256 = ? AND message_id = ? AND direction = 'inbound'",
        [sha, parsed.message_id],
    ).fetchone()
    return Stored(existing[0], existing[1], duplicate=True, parsed=parsed) if existing else None


def file_inbound(
    db: sqlite_utils.Database, parsed: ParsedMessage, raw: bytes | None, sha: str, envelope: Envelope, *,
    kind: str, received_at: str, clock: Clock, message_id: int | None = None, size: int = 0,
) -> Stored:
    """Thread, index and insert one parsed inbound message (``raw`` None: the arrival ``message_id``'s bytes)."""
    correspondent = (parsed.from_addr or envelope.mail_from or "").casefold()
    with db.atomic():
        thread_id = _thread_for(db, parsed, correspondent, received_at, clock, own_thread_only=True)
        message_id = _insert(
            db, parsed, raw, sha, id=message_id, size=len(raw) if raw is not None else size,
            direction="inbound", kind=kind, created_at=received_at, correspondent=correspondent,
            mail_from=envelope.mail_from, rcpt_to=list(envelope.rcpt_tos), peer=envelope.peer,
            thread_id=thread_id, processed_at=None,
            meta={
                **({"delivery_report": True} if parsed.is_delivery_report else {}),
                # Kept beside the message, not in a Received header: the
                # archive holds the sender's bytes exactly.
                **({"tls": envelope.tls} if envelope.tls else {}),
                **({"helo": envelope.helo[:255]} if envelope.helo else {}),
            },
        )
        _touch_thread(db, thread_id, received_at, reopen=(kind == "letter"), letter=(kind == "letter"))
    return Stored(message_id, thread_id, parsed=parsed)


def next_message_id(db: sqlite_utils.Database) -> int:
    """The id the next message or arrival gets: the two tables share one series of ids."""
    return db.execute("SELECT max(ifnull((SELECT max(id) FROM messages), 0), "
                      "ifnull((SELECT max(id) FROM arrivals), 0)) + 1").fetchone()[0]


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
    parsed: ParsedMessage | None = None,
) -> Stored:
    """Archive a message we are about to send, in its thread (or a new one).

    ``parsed``: the fields of ``raw`` when the caller has them already (our
    own mail, see ``parsing.parse_own``); otherwise ``raw`` is parsed here.
    """
    if parsed is None:
        parsed = parse_message(raw)
    correspondent = (rcpt_to[0] if rcpt_to else "").casefold()
    now = iso(clock())
    with db.atomic():
        if thread_id is None:
            thread_id = _thread_for(db, parsed, correspondent, now, clock)
        message_id = _insert(
            db, parsed, raw, hashlib.sha256(raw).hexdigest(), size=len(raw),
            direction="outbound", kind=kind, created_at=now, correspondent=correspondent,
            mail_from=mail_from, rcpt_to=rcpt_to, peer="", thread_id=thread_id,
            processed_at=now, meta=meta or {},
        )
        _touch_thread(db, thread_id, now, reopen=False)
    return Stored(message_id, thread_id, parsed=parsed)


def _insert(db, parsed: ParsedMessage, raw: bytes | None, sha: str, *, size: int, id: int | None = None, **columns) -> int:
    row = {
        "id": id if id is not None else next_message_id(db),
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
        "size": size,
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
    if raw is None:
        db.execute("INSERT INTO raw_messages (id, raw) SELECT id, raw FROM arrivals WHERE id = ?", [message_id])
    else:
        db.execute("INSERT INTO raw_messages (id, raw) VALUES (?, ?)", [message_id, raw])
    return message_id


def _thread_for(db, parsed: ParsedMessage, correspondent: str, now: str, clock: Clock, *,
                own_thread_only: bool = False) -> int:
    """Find the thread a message belongs to, or start one.

    First by the Message-IDs it answers (In-Reply-To, then References, newest
    first); when a reply lost those headers, by its normalised subject and
    correspondent within the last SUBJECT_FALLBACK_DAYS.

    With ``own_thread_only`` (every inbound message) a reference counts only
    into a thread of the same correspondent: Message-IDs are seen by others
    (or guessed), and a stranger's letter "in reply to" someone else's
    message must not land in that reader's thread, where the desk's answer
    would follow it.
    """
    candidates = [parsed.in_reply_to] if parsed.in_reply_to else []
    candidates += list(reversed(parsed.references))
    for ref in candidates:
        row = db.execute(
            "SELECT m.thread_id, t.correspondent FROM messages m JOIN threads t ON t.id = m.thread_id "
            "WHERE m.message_id = ? ORDER BY m.id LIMIT 1", [ref]
        ).fetchone()
        if row and (not own_thread_only or row[1] == correspondent):
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


def _touch_thread(db, thread_id: int, now: str, *, reopen: bool, letter: bool = False) -> None:
    # A reader writing again puts an answered or archived thread back on the
    # desk; a reader's letter makes it a thread the desk lists (has_letter).
    db.execute(
        "UPDATE threads SET message_count = message_count + 1, last_message_at = max(last_message_at, ?)"
        + (", status = 'new'" if reopen else "")
        + (", has_letter = 1" if letter else "")
        + " WHERE id = ?",
        [now, thread_id],
    )


def raw_bytes(db: sqlite_utils.Database, message_id: int) -> bytes:
    """The exact bytes of an archived message."""
    row = db.execute("SELECT raw FROM raw_messages WHERE id = ?", [message_id]).fetchone()
    if row is None:
        raise KeyError(message_id)
    return bytes(row[0])


def add_signature(db: sqlite_utils.Database, message_id: int, header: bytes) -> bytes:
    """Prepend a signature header field (DKIM) to an outbound message before it is sent; returns the new bytes.

    This is the one change ever made to archived bytes, and it only adds a
    header at the top: the outbox signs a message just before its first
    delivery, and stores the signed bytes first, so the archive holds
    exactly what went on the wire. Size, hash and header list follow.
    """
    found = db.execute(
        "SELECT r.raw, m.headers, m.direction FROM raw_messages r JOIN messages m ON m.id = r.id WHERE r.id = ?",
        [message_id],
    ).fetchone()
    if found is None:
        raise KeyError(message_id)
    raw, headers, direction = found
    if direction != "outbound":
        raise ValueError(f"message {message_id} is {direction}: only our own messages are signed")
    signed = header + bytes(raw)
    # The field as parse_message reads it from the signed bytes (each header is parsed on its own).
    field_ = parse_message(header + b"\r\n").headers[:1]
    listed = [list(h) for h in field_] + json.loads(headers or "[]")
    db.execute("UPDATE raw_messages SET raw = ? WHERE id = ?", [signed, message_id])
    db.execute(
        "UPDATE messages SET size = ?, raw_sha256 = ?, headers = ? WHERE id = ?",
        [len(signed), hashlib.sha256(signed).hexdigest(), json.dumps(listed, ensure_ascii=False), message_id],
    )
    return signed


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
    open_only: bool = False,
    letters_only: bool = False,
    previews: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[dict]:
    """Threads in the inbox order: urgent and still open first, then new, answered, archived.

    Within each of those, newest activity first. ``urgent`` keeps only
    threads flagged urgent (True) or not (False); ``open_only`` leaves out
    archived threads; ``letters_only`` leaves out threads no reader wrote a
    letter in (digest copies, confirmations, bounces). With ``previews``
    each row returned also has ``reader_name`` and ``preview``: the sender's
    name and the first PREVIEW_SOURCE_CHARS characters of the thread's latest
    inbound message (looked up for the returned rows only).
    """
    limit = limit if limit >= 0 else _NO_LIMIT
    offset = max(0, offset)
    # The order is five runs, each a range of one index already sorted by
    # last_message_at, so each run is read only as far as the page needs.
    # One ORDER BY over every thread (with an EXISTS per thread for
    # letters_only) sorted them all for every page: 641 ms for the desk's
    # first page at 158,000 threads (bench/archive.py).
    runs = [
        (run_status, urgent if run_urgent is None else run_urgent) for run_status, run_urgent in _INBOX_RUNS
        if not (status and run_status != status) and not (open_only and run_status == "archived")
        and (urgent is None or run_urgent is None or run_urgent == urgent)
    ]
    found: list[dict] = []
    for n, (run_status, wanted) in enumerate(runs):
        if len(found) >= limit:
            break
        if offset and n < len(runs) - 1:  # the last run needs no count: OFFSET past its end is empty
            size = _run_size(db, run_status, wanted, letters_only, since)
            if offset >= size:
                offset -= size
                continue
        index, where, params = _run(run_status, wanted, letters_only, since)
        found += db.query(
            f"SELECT * FROM threads INDEXED BY {index} WHERE {where} "
            "ORDER BY last_message_at DESC, id DESC LIMIT ? OFFSET ?",
            params + [limit - len(found), offset],
        )
        offset = 0
    if previews:
        for row in found:
            latest = db.execute(
                "SELECT from_name, substr(body_text, 1, ?) FROM messages WHERE thread_id = ? "
                "AND direction = 'inbound' ORDER BY created_at DESC, id DESC LIMIT 1",
                [PREVIEW_SOURCE_CHARS, row["id"]],
            ).fetchone()
            row["reader_name"], row["preview"] = (latest[0] or "", latest[1] or "") if latest else ("", "")
    return found


#: How much of the latest inbound message ``list_threads(previews=True)`` returns.
PREVIEW_SOURCE_CHARS = 600
_NO_LIMIT = 2**62

#: The inbox order, run by run: (status, urgent). Urgent threads that are
#: still open come first; an archived thread is just archived, urgent or not
#: (urgent None: both, in one run).
_INBOX_RUNS = (("new", True), ("answered", True), ("new", False), ("answered", False), ("archived", None))


def _run(status: str, urgent: bool | None, letters_only: bool, since: str | None) -> tuple[str, str, list]:
    """The index and WHERE clause of one run of the inbox order (see migration 5)."""
    # INDEXED BY because the planner, seeing has_letter and status both
    # pinned in threads_letters, would walk every answered thread to find the
    # few urgent ones rather than take the small threads_urgent index.
    if urgent:
        index, where = "threads_urgent", ["status = ?", "urgent = 1"]
    else:
        index, where = ("threads_letters" if letters_only else "threads_by_status"), ["status = ?"]
        if urgent is False:
            where.append("urgent != 1")
    params: list = [status]
    if letters_only:
        where.append("has_letter = 1")
    if since:
        where.append("last_message_at >= ?")
        params.append(since)
    return index, " AND ".join(where), params


def _run_size(db: sqlite_utils.Database, status: str, urgent: bool | None, letters_only: bool,
              since: str | None) -> int:
    """How many threads one run of the inbox order holds, counted on its index."""
    if urgent is False:
        # Everything in the status minus its urgent threads: two index counts,
        # where "urgent != 1" would read every row from the table.
        return (_run_size(db, status, None, letters_only, since)
                - _run_size(db, status, True, letters_only, since))
    index, where, params = _run(status, urgent, letters_only, since)
    return db.execute(f"SELECT count(*) FROM threads INDEXED BY {index} WHERE {where}", params).fetchone()[0]


def thread_counts(db: sqlite_utils.Database, *, letters_only: bool = False) -> dict[str, int]:
    """How many threads each status holds, and how many are urgent.

    ``urgent`` counts urgent threads not archived, ``waiting`` those of them
    still new; ``letters_only`` as in list_threads. ``all`` is every thread
    in the archive, letters or not.
    """
    # Read from the tally the threads table's triggers keep (migration 5):
    # counting on the indexes took 12 ms at 158,000 threads and grows with
    # the archive; a GROUP BY over the table took 44-48 ms.
    counts = {status: 0 for status in THREAD_STATUSES} | {"urgent": 0, "waiting": 0, "all": 0}
    for has_letter, status, urgent, n in db.execute(
        "SELECT has_letter, status, urgent, n_threads FROM thread_tally"
    ):
        counts["all"] += n
        if letters_only and not has_letter:
            continue
        counts[status] += n
        if urgent and status != "archived":
            counts["urgent"] += n
            counts["waiting"] += n if status == "new" else 0
    return counts


def letters_since(db: sqlite_utils.Database, since: str) -> int:
    """How many letters (inbound, kind ``letter``) were stored at or after ``since``.

    ``since`` is an archive timestamp (:func:`clock.iso`). Duplicates a sender
    retried are stored once, so each letter counts once.
    """
    # messages has no index on created_at, and a scan reads every body (2 s
    # cold on 200,000 letters). Ids are handed out in arrival order, so the
    # first id stored at or after ``since`` is found by bisecting the rowid
    # (about 20 lookups), and only the rows from there on are read. The
    # created_at test stays, so a clock that stepped back can only cost the
    # count a letter or two stored right at the boundary.
    low, high = db.execute("SELECT min(id), max(id) FROM messages").fetchone()
    if low is None:
        return 0
    high += 1  # the answer lies in [low, high]; high means "none"
    while low < high:
        middle = (low + high) // 2
        found_id, created_at = db.execute(
            "SELECT id, created_at FROM messages WHERE id >= ? ORDER BY id LIMIT 1", [middle]
        ).fetchone()
        if created_at >= since:
            high = middle
        else:
            low = found_id + 1
    return db.execute(
        "SELECT count(*) FROM messages WHERE id >= ? AND created_at >= ? "
        "AND direction = 'inbound' AND kind = 'letter'",
        [low, since],
    ).fetchone()[0]


#: When more messages than this match a search, only the newest this many are
#: ranked. Ranking is bm25 over every match, and a common word is in a tenth
#: to a half of all letters: ranking them all took up to 320 ms on 200,000
#: letters, ranking the newest 10,000 p99 28 ms (docs/performance.md).
RANK_NEWEST = 10_000


class SearchHits(list):
    """The rows a search found, best first.

    ``ranked_newest`` is None when every match was ranked, else how many of
    the newest matches were (more than that matched).
    """

    ranked_newest: int | None = None


def search(
    db: sqlite_utils.Database,
    query: str,
    *,
    limit: int = 50,
    marks: tuple[str, str] = ("[", "]"),
    snippet_words: int = 12,
    rank_newest: int | None = RANK_NEWEST,
) -> SearchHits:
    """Full-text search over subjects, bodies and senders, best matches first.

    Each row is the message (id, thread_id, direction, kind, created_at,
    from_addr, from_name, correspondent, subject), its thread's ``status``
    and ``urgent``, a ``snippet`` of the body and the whole subject
    (``subject_marked``) with each match between ``marks``, and its bm25
    ``rank`` (lower is better). When more than ``rank_newest`` messages
    match, only the newest ``rank_newest`` are ranked (the result's
    ``ranked_newest`` says so); None ranks every match.
    Raises SearchSyntaxError with an explanation for a query FTS5 rejects.
    """
    query = (query or "").strip()
    if not query:
        raise SearchSyntaxError("the search is empty: give at least one word")
    try:
        # One walk down the match list, newest first, ranking as it goes and
        # stopping after rank_newest (+1, to know whether more matched).
        # Asking FTS5 to ORDER BY rank ranks every match; finding the
        # cut-off first walked the list twice (50-57 ms for some three-word
        # searches on 200,000 letters).
        ranked = db.execute(
            "SELECT rowid, rank FROM messages_fts "
            f"WHERE messages_fts MATCH ? AND rank MATCH '{_BM25}' ORDER BY rowid DESC LIMIT ?",
            [query, rank_newest + 1 if rank_newest else -1],
        ).fetchall()
        hits = SearchHits()
        if rank_newest and len(ranked) > rank_newest:
            ranked = ranked[:rank_newest]
            hits.ranked_newest = rank_newest
        best = dict(heapq.nsmallest(limit, ranked, key=lambda row: (row[1], row[0]))) if limit > 0 else {}
        rows = _shown(db, query, best, marks, snippet_words) if best else []
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if any(marker in text for marker in _FTS_QUERY_ERRORS):
            raise SearchSyntaxError(_explain_syntax(query, text)) from None
        raise
    for row in rows:
        row["rank"] = best[row["id"]]
        hits.append(row)
    hits.sort(key=lambda row: (row["rank"], row["id"]))
    return hits


#: Subject matches weigh three times a body match; names and addresses twice.
_BM25 = "bm25(3.0, 1.0, 2.0, 2.0)"


def _shown(db: sqlite_utils.Database, query: str, best: dict[int, float], marks: tuple[str, str],
           snippet_words: int) -> list[dict]:
    """The rows of the messages ``best`` names, with their snippet and highlighted subject."""
    # snippet() and highlight() need the match positions, so the query is
    # matched again: along the stretch of the match list that holds these
    # rows (walked once already, and cheaper than finding 50 rows one by
    # one in every index segment: 3-7 ms instead of 10-20 for three words),
    # but for a phrase row by row, as walking would check word positions in
    # every message that holds all its words.
    shown = json.dumps(list(best))
    if '"' in query or "NEAR" in query:
        wanted, params = "messages_fts.rowid IN (SELECT value FROM json_each(?))", [shown]
    else:
        wanted = "messages_fts.rowid BETWEEN ? AND ? AND +messages_fts.rowid IN (SELECT value FROM json_each(?))"
        params = [min(best), max(best), shown]
    start, end = marks
    return list(db.query(
        "SELECT m.id, m.thread_id, m.direction, m.kind, m.created_at, m.from_addr, m.from_name, "
        "m.correspondent, m.subject, t.status, t.urgent, "
        "snippet(messages_fts, 1, ?, ?, ' … ', ?) AS snippet, "
        "highlight(messages_fts, 0, ?, ?) AS subject_marked "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
        "JOIN threads t ON t.id = m.thread_id "
        f"WHERE messages_fts MATCH ? AND {wanted}",
        [start, end, snippet_words, start, end, query, *params],
    ))


def _explain_syntax(query: str, error: str) -> str:
    hint = "some of it reads as search syntax"
    if query.count('"') % 2:
        hint = "a double quote is not closed"
    elif query.count("(") != query.count(")"):
        hint = "the brackets do not pair up"
    elif re.search(r"\b(AND|OR|NOT)\s*$", query) or re.match(r"^\s*(AND|OR|NOT)\b", query):
        hint = "AND, OR and NOT need a word on both sides"
    elif "no such column" in error:
        hint = ("a word followed by ':' is read as a field name (subject:, body_text:, "
                "from_name:, from_addr:); quote the word to search for it literally")
    example = '"' + query.replace('"', "") + '"'
    return (f"cannot search for {query!r}: {hint}. To search for the text as it is, put it in "
            f"double quotes: {example} (the index said: {error})")
