"""Reading the archive at the desk: the inbox, a whole thread, search, filing.

Every function takes a database handle and runs inside the caller's
transaction, so the web desk can hand them to the archive writer and the CLI
can call them directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import sqlite_utils

from mailer.desk.decisions import decision
from mailer.desk.errors import DeskError, ThreadNotFound
from mailer.desk.text import CLOSING, GREETING
from mailer.outbound.compose import AddressError, make_address, reply_subject
from mailer.store import archive

#: Inbox views. Every view but "archived" and "all" shows only threads with a
#: reader's letter in them; those two add digests, confirmations and bounces.
INBOX_VIEWS = ("inbox", "urgent", "new", "answered", "archived", "all")
_VIEWS = {  # view: (status, urgent, open only, letters only)
    "inbox": (None, None, True, True),
    "urgent": (None, True, True, True),
    "new": ("new", None, False, True),
    "answered": ("answered", None, False, True),
    # Archived holds every archived thread, as All shows them: subscriptions and digests too.
    "archived": ("archived", None, False, False),
    "all": (None, None, False, False),
}
PREVIEW_CHARS = 180


def inbox(db: sqlite_utils.Database, *, view: str = "inbox", limit: int = 50, offset: int = 0) -> list[dict]:
    """The threads of one inbox view (see INBOX_VIEWS), urgent first, then new, then newest."""
    if view not in _VIEWS:
        raise DeskError(f"unknown view {view!r} (known: {', '.join(INBOX_VIEWS)})")
    status, urgent, open_only, letters_only = _VIEWS[view]
    return list_threads(db, status=status, urgent=urgent, open_only=open_only, letters_only=letters_only,
                        limit=limit, offset=offset)


def list_threads(
    db: sqlite_utils.Database,
    *,
    status: str | None = None,
    urgent: bool | None = None,
    since: str | None = None,
    open_only: bool = False,
    letters_only: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> list[dict]:
    """Threads, urgent (and not archived) first, then new, then newest activity first.

    Each row is the thread plus ``reader_name`` and a short ``preview`` of
    the reader's latest letter. ``letters_only`` leaves out threads no
    reader wrote in (digest copies, confirmations, bounces).
    """
    rows = archive.list_threads(db, status=status, urgent=urgent, since=since, open_only=open_only,
                                letters_only=letters_only, previews=True, limit=limit, offset=offset)
    for row in rows:
        row["preview"] = _preview(row["preview"])
    return rows


def view_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """How many threads each inbox view holds; ``waiting`` is urgent and still new."""
    counts = archive.thread_counts(db, letters_only=True)
    counts["inbox"] = counts["new"] + counts["answered"]
    counts["archived"] = archive.thread_counts(db)["archived"]
    return counts


def _preview(body: str) -> str:
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith(">")]
    if lines and GREETING.match(lines[0]):
        lines = lines[1:]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


_JSON_COLUMNS = ("rcpt_to", "to_addrs", "references_ids", "attachments", "headers", "meta")


def thread_detail(db: sqlite_utils.Database, thread_id: int, *, token_key: bytes | None = None) -> dict:
    """A thread and every message in it, oldest first, ready to show.

    Messages carry their JSON columns decoded, the ``topics`` an
    acknowledgement linked (slug, title, url), for outbound mail the
    outbox's ``delivery`` status, and for inbound mail the pipeline's
    ``decision`` in words. With ``token_key`` a digest copy's ``body_text``
    is the copy itself, rebuilt from its digest. Also ``letter`` (the reader's latest
    letter, which a reply answers) and ``reply_to`` (where a reply goes).
    Raises ThreadNotFound.
    """
    thread = archive.get_thread(db, thread_id)
    if thread is None:
        raise ThreadNotFound(thread_id)
    messages = archive.thread_messages(db, thread_id)
    for message in messages:
        for key in _JSON_COLUMNS:
            try:
                message[key] = json.loads(message[key]) if message[key] else ([] if key != "meta" else {})
            except (TypeError, ValueError):
                message[key] = {} if key == "meta" else []
        message["topics"] = linked_topics(db, message["meta"]) if message["direction"] == "outbound" else []
        message["delivery"] = None
        if message["direction"] == "outbound":
            row = db.execute(
                "SELECT status, attempts, sent_at, last_error FROM outbox WHERE message_id = ? "
                "ORDER BY id DESC LIMIT 1", [message["id"]],
            ).fetchone()
            if row:
                message["delivery"] = dict(zip(("status", "attempts", "sent_at", "last_error"), row))
    by_id = {m["id"]: m for m in messages}
    for message in messages:
        message["decision"] = decision(message, by_id)
        if message["kind"] == "digest" and token_key is not None:
            message["body_text"] = _digest_text(db, message, token_key)
    letter = _last_letter(messages)
    return {
        "thread": thread,
        "messages": messages,
        "letter": letter,
        "reply_to": reply_address(letter) if letter else "",
        "reply_subject": reply_subject(letter["subject"]) if letter else "",
        "reply_warning": reply_warning(thread, letter) if letter else None,
    }


def _digest_text(db: sqlite_utils.Database, message: dict, token_key: bytes) -> str:
    """The plain text of a digest copy, rebuilt from its digest's frame (the archive keeps no body)."""
    import email
    from email import policy

    from mailer.newsletter.digest import DigestError, archived_bytes

    try:
        raw = archived_bytes(db, message["id"], token_key)
    except (KeyError, DigestError) as exc:
        return f"{message['body_text']}\n\n(the copy cannot be rebuilt: {exc})"
    body = email.message_from_bytes(raw, policy=policy.default).get_body(("plain",))
    return body.get_content() if body is not None else message["body_text"]


def linked_topics(db: sqlite_utils.Database, meta: dict) -> list[dict]:
    """The topics an acknowledgement linked (its meta ``topics`` slugs), with titles."""
    slugs = [s for s in (meta or {}).get("topics") or [] if isinstance(s, str)]
    found = {}
    if slugs and "topics" in db.table_names():
        marks = ", ".join("?" for _ in slugs)
        for slug, title, url in db.execute(f"SELECT slug, title, url FROM topics WHERE slug IN ({marks})", slugs):
            found[slug] = {"slug": slug, "title": title, "url": url}
    return [found.get(slug, {"slug": slug, "title": slug, "url": ""}) for slug in slugs]


_LIST_ITEM = re.compile(r"^(?:[*\-•–]|\d{1,2}[.)])\s")
#: A line at least this long, followed by more text, was most likely wrapped by the mail program.
WRAPPED_LINE = 50


def reflow(text: str) -> str:
    """Mail text with hard-wrapped paragraphs joined, so it reads well on a narrow screen.

    Only for showing: short lines (addresses, poems, sign-offs), indented
    lines, list items and quotes keep their breaks.
    """
    out: list[str] = []
    previous = None  # the line as written, not as joined so far
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if previous is not None and _continues(previous, line):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
        previous = line
    return "\n".join(out)


def _continues(previous: str, line: str) -> bool:
    if not previous.strip() or not line.strip() or line[:1].isspace() or previous == "-- ":
        return False
    if previous.lstrip().startswith(">") or line.startswith(">") or _LIST_ITEM.match(line):
        return False
    if CLOSING.match(line):
        return False
    # A sentence that ends at the end of a line and a new one on the next may be
    # a deliberate break (a list of helplines); keeping it costs a ragged edge.
    if previous.rstrip()[-1:] in ".!?:" and (line[:1].isupper() or line[:1].isdigit()):
        return False
    # format=flowed marks a soft break with a trailing space; else judge by length.
    return previous.endswith(" ") or len(previous) >= WRAPPED_LINE


def _last_letter(messages: list[dict]) -> dict | None:
    letters = [m for m in messages if m["direction"] == "inbound" and m["kind"] == "letter"]
    return letters[-1] if letters else None


def reply_address(letter: dict) -> str:
    """Where a reply to ``letter`` goes: its Reply-To, else its From, else the envelope sender."""
    for candidate in (letter.get("reply_to"), letter.get("from_addr"), letter.get("mail_from")):
        if candidate:
            try:
                make_address(candidate)
            except AddressError:
                continue
            return candidate
    return ""


def reply_warning(thread: dict, letter: dict) -> str | None:
    """A warning when a reply would go to someone other than the thread's reader, else None.

    Reply-To is whatever the sender wrote: a stranger's letter can ask for
    the answer to a reader's thread to go to them.
    """
    recipient = reply_address(letter)
    reader = (thread.get("correspondent") or "").casefold()
    if not recipient or not reader:
        return None
    if recipient.strip().casefold() == reader:
        return None
    return (f"This reply would go to {recipient}, not to {reader}, the reader this thread belongs to "
            "(the letter's Reply-To asks for it). Anyone can write a Reply-To: send only if you know "
            "it is the same person.")


#: Snippet markers: private-use characters no letter contains, so a match can
#: be highlighted safely after escaping (brackets in a letter stay brackets).
MATCH_START, MATCH_END = "\ue000", "\ue001"


@dataclass
class SearchResult:
    """Ranked hits for a query, and the query actually run."""

    query: str
    rows: list[dict]
    #: True when the query was not valid FTS5 syntax and was run word by word, literally.
    literal: bool = False
    #: Set when more messages matched than are ranked: only this many of the newest were.
    ranked_newest: int | None = None


def search(db: sqlite_utils.Database, query: str, *, limit: int = 50) -> SearchResult:
    """Full-text search of every message, best first, with ``parts`` to highlight.

    A query FTS5 cannot parse but that has no operators in it (an address
    like ``dana@example.org``, a word with an apostrophe) is searched again
    with each word in quotes; otherwise raises archive.SearchSyntaxError
    with an explanation. When a very common word matches more messages
    than archive.RANK_NEWEST, the best of the newest that many are shown.
    """
    query = (query or "").strip()
    try:
        return _search(db, query, limit)
    except archive.SearchSyntaxError:
        literal = _literal_query(query)
        if literal is None:
            raise
    return _search(db, literal, limit, literal=True)


def _search(db: sqlite_utils.Database, query: str, limit: int, *, literal: bool = False) -> SearchResult:
    hits = archive.search(db, query, limit=limit, marks=(MATCH_START, MATCH_END), snippet_words=14)
    for row in hits:
        row["parts"] = highlight_parts(row.pop("snippet") or "")
        row["subject_parts"] = highlight_parts(row.pop("subject_marked") or "")
    return SearchResult(query, list(hits), literal=literal, ranked_newest=hits.ranked_newest)


_OPERATORS = re.compile(r'["()*:^]|\b(AND|OR|NOT|NEAR)\b')


def _literal_query(query: str) -> str | None:
    """Each word of an operator-free query in quotes (FTS5 reads a quoted string literally)."""
    if _OPERATORS.search(query):
        return None
    words = query.split()
    return " ".join(f'"{w}"' for w in words) if words else None


def highlight_parts(marked: str) -> list[tuple[str, bool]]:
    """Split text with MATCH_START/MATCH_END markers into (text, is_match) pieces."""
    parts: list[tuple[str, bool]] = []
    rest = marked
    while rest:
        start = rest.find(MATCH_START)
        if start < 0:
            parts.append((rest, False))
            break
        if start:
            parts.append((rest[:start], False))
        end = rest.find(MATCH_END, start + 1)
        if end < 0:
            parts.append((rest[start + 1:], True))
            break
        parts.append((rest[start + 1:end], True))
        rest = rest[end + 1:]
    return [(text.replace(MATCH_START, "").replace(MATCH_END, ""), hit) for text, hit in parts if text]
