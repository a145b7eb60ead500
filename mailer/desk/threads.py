"""The columnist's desk: what the CLI and the web desk do to the archive.

Reading (the inbox, a whole thread, search with highlighted snippets),
answering a reader in the thread, filing a thread, exporting it for any mail
client, turning a letter into an anonymised topic draft, and forgetting a
correspondent entirely. Every function takes a database handle (and a clock
where time matters) and runs inside the caller's transaction, so the web desk
can hand them to the archive writer and the CLI can call them directly.

The desk's password hashing lives here too, because both sides need it: the
CLI makes hashes (``mailer desk hash-password``) and the web desk checks them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import mailbox
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jinja2
import sqlite_utils

from . import archive
from .clock import Clock, parse_iso
from .compose import AddressError, Outgoing, build_message, make_address, render, reply_subject
from .config import Config
from .outbox import enqueue


class DeskError(Exception):
    """Something the desk cannot do; the message tells the columnist why."""


class ThreadNotFound(DeskError):
    """No thread with that id (it may have been forgotten)."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(f"no thread with id {thread_id}")
        self.thread_id = thread_id


class NothingToAnswer(DeskError):
    """The thread holds no letter from a reader that a reply could answer."""


class EmptyReply(DeskError):
    """The columnist's reply has no text."""


# ---------------------------------------------------------------------------
# Reading: inbox, threads, search

#: Inbox views. Every view but "all" shows only threads with a reader's letter
#: in them; "all" adds digests, confirmations and bounces.
INBOX_VIEWS = ("inbox", "urgent", "new", "answered", "archived", "all")
_VIEWS = {  # view: (status, urgent, open only, letters only)
    "inbox": (None, None, True, True),
    "urgent": (None, True, True, True),
    "new": ("new", None, False, True),
    "answered": ("answered", None, False, True),
    "archived": ("archived", None, False, True),
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
    return counts


def _preview(body: str) -> str:
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith(">")]
    if lines and _GREETING.match(lines[0]):
        lines = lines[1:]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


_JSON_COLUMNS = ("rcpt_to", "to_addrs", "references_ids", "attachments", "headers", "meta")


def thread_detail(db: sqlite_utils.Database, thread_id: int) -> dict:
    """A thread and every message in it, oldest first, ready to show.

    Messages carry their JSON columns decoded, the ``topics`` an
    acknowledgement linked (slug, title, url) and, for outbound mail, the
    outbox's ``delivery`` status. Also ``letter`` (the reader's latest
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
    letter = _last_letter(messages)
    return {
        "thread": thread,
        "messages": messages,
        "letter": letter,
        "reply_to": reply_address(letter) if letter else "",
        "reply_subject": reply_subject(letter["subject"]) if letter else "",
    }


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
    if _CLOSING.match(line):
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


# ---------------------------------------------------------------------------
# Answering and filing

#: How much of the reader's letter a reply quotes below the columnist's text.
QUOTE_LINES = 60


@dataclass
class ReplyDraft:
    """A reply ready to send: the message, where it goes, and what it answers."""

    outgoing: Outgoing
    letter: dict
    thread_id: int

    @property
    def recipient(self) -> str:
        return self.outgoing.recipient.addr_spec


@dataclass(frozen=True)
class Replied:
    """A reply that is archived in its thread and queued in the outbox."""

    message_id: int
    outbox_id: int
    thread_id: int
    recipient: str


def compose_reply(
    db: sqlite_utils.Database,
    thread_id: int,
    text: str,
    *,
    config: Config,
    templates: jinja2.Environment,
) -> ReplyDraft:
    """Render the columnist's reply to the thread's latest letter (nothing is stored).

    Raises ThreadNotFound, NothingToAnswer or EmptyReply.
    """
    text = _clean_reply_text(text)
    if not text:
        raise EmptyReply("the reply is empty: write something to the reader first")
    detail = thread_detail(db, thread_id)
    letter = detail["letter"]
    if letter is None:
        raise NothingToAnswer(f"thread {thread_id} holds no letter from a reader to answer")
    recipient = detail["reply_to"]
    if not recipient:
        raise NothingToAnswer(f"the letter in thread {thread_id} has no address a reply could go to")
    if recipient.casefold() in config.own_addresses():
        raise NothingToAnswer(f"the letter in thread {thread_id} came from the column's own address {recipient}")
    reader_name = letter["from_name"] if recipient.casefold() == (letter["from_addr"] or "").casefold() else ""
    quoted = (letter["body_text"] or "").splitlines()
    body = render(templates, "reply", {
        "reply_text": text,
        "paragraphs": _paragraphs(text),
        "reader_name": reader_name,
        "subject": letter["subject"],
        "letter_date": _when_text(letter["created_at"], config.column.zone),
        "quoted": quoted[:QUOTE_LINES],
        "quote_cut": len(quoted) > QUOTE_LINES,
        "column": config.column,
    })
    references = list(letter["references_ids"] or [])
    if not letter["message_id"]:
        references += [m["message_id"] for m in detail["messages"] if m["message_id"]][-10:]
    try:
        outgoing = Outgoing(
            sender=make_address(config.addresses.letters, config.column.columnist),
            recipient=make_address(recipient, reader_name),
            subject=reply_subject(letter["subject"]),
            body=body,
            domain=config.smtp.domain,
            in_reply_to=letter["message_id"],
            references=references,
        )
    except AddressError as exc:
        raise NothingToAnswer(f"cannot answer thread {thread_id}: {exc}") from None
    return ReplyDraft(outgoing, letter, thread_id)


def reply(
    db: sqlite_utils.Database,
    thread_id: int,
    text: str,
    *,
    config: Config,
    templates: jinja2.Environment,
    clock: Clock,
) -> Replied:
    """Answer the thread's latest letter: archive and queue the reply; the thread is answered.

    The reply is threaded (In-Reply-To and References point at the letter)
    and signed by the column's templates; it is delivered by the outbox.
    """
    draft = compose_reply(db, thread_id, text, config=config, templates=templates)
    message = build_message(draft.outgoing, clock=clock)
    with db.atomic():
        stored, outbox_id = enqueue(
            db, message, kind="reply", mail_from=config.addresses.letters,
            rcpt_to=[draft.recipient], clock=clock, thread_id=thread_id,
            meta={"answers": draft.letter["id"], "by": "desk"},
        )
        db.execute("UPDATE threads SET status = 'answered' WHERE id = ?", [thread_id])
    return Replied(stored.message_id, outbox_id, thread_id, draft.recipient)


def _clean_reply_text(text: str) -> str:
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n").rstrip()


def _paragraphs(text: str) -> list[list[str]]:
    """Text as paragraphs (split on blank lines) of lines, for the HTML template."""
    paragraphs, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def greeting(letter: dict | None) -> str:
    """A first line for the reply form: "Dear Dana," from the reader's name."""
    name = (letter or {}).get("from_name") or ""
    first = name.split()[0] if name.split() else ""
    first = first.strip(",;\"'")
    if first and first.replace("-", "").replace("'", "").isalpha():
        return f"Dear {first},"
    return "Dear reader,"


def mark(db: sqlite_utils.Database, thread_id: int, status: str) -> dict:
    """Set a thread's status (new, answered or archived); returns the updated thread."""
    if status not in archive.THREAD_STATUSES:
        raise DeskError(f"unknown status {status!r} (known: {', '.join(archive.THREAD_STATUSES)})")
    with db.atomic():
        cursor = db.execute("UPDATE threads SET status = ? WHERE id = ?", [status, thread_id])
        if cursor.rowcount == 0:
            raise ThreadNotFound(thread_id)
    return archive.get_thread(db, thread_id)


# ---------------------------------------------------------------------------
# Export: the original bytes, for any mail client


def message_bytes(db: sqlite_utils.Database, message: dict, *, config: Config | None = None) -> bytes:
    """The exact bytes of an archived message.

    Digest copies are kept compactly (one frame per digest); they are
    rebuilt, and checked against their SHA-256, by the digest module, which
    needs the config for the unsubscribe-link key.
    """
    try:
        return archive.raw_bytes(db, message["id"])
    except KeyError:
        pass
    if message["kind"] == "digest" and config is not None:
        try:
            from .digest import archived_bytes
            from .subscribers import token_key

            return archived_bytes(db, message["id"], token_key(config))
        except Exception as exc:  # noqa: BLE001 - any failure here is "cannot rebuild it"
            raise DeskError(f"message {message['id']}: cannot rebuild this digest copy: {exc}") from None
    raise DeskError(f"message {message['id']} ({message['kind']}) has no stored bytes")


def export_mbox(db: sqlite_utils.Database, thread_id: int, path: Path, *, config: Config | None = None) -> int:
    """Append every message of the thread to an mbox file; returns how many.

    mbox stores each message after a ``From `` line and quotes body lines
    starting "From " as ">From " (the format's own rule); otherwise the bytes,
    line endings included, are the ones archived.
    """
    messages = _thread_or_raise(db, thread_id)
    box = mailbox.mbox(str(path), create=True)
    box.lock()
    try:
        for message in messages:
            raw = message_bytes(db, message, config=config)
            box.add(_from_line(message) + b"\n" + raw)
        box.flush()
    finally:
        box.unlock()
        box.close()
    return len(messages)


def export_eml(
    db: sqlite_utils.Database, thread_id: int, folder: Path, *, overwrite: bool = False, config: Config | None = None
) -> list[Path]:
    """Write each message of the thread as one .eml file with its exact archived bytes."""
    messages = _thread_or_raise(db, thread_id)
    folder = Path(folder)
    names = [folder / eml_name(i, m) for i, m in enumerate(messages, start=1)]
    clashes = [p for p in names if p.exists()]
    if clashes and not overwrite:
        raise DeskError(f"{clashes[0]} already exists (choose an empty folder, or overwrite)")
    contents = [message_bytes(db, message, config=config) for message in messages]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(names, contents):
        name.write_bytes(data)
    return names


def eml_name(position: int, message: dict) -> str:
    """``003-inbound-letter-17.eml``: sorts in thread order, says what it is."""
    return f"{position:03d}-{message['direction']}-{_slug(message['kind'], 20) or 'message'}-{message['id']}.eml"


def _thread_or_raise(db: sqlite_utils.Database, thread_id: int) -> list[dict]:
    if archive.get_thread(db, thread_id) is None:
        raise ThreadNotFound(thread_id)
    return archive.thread_messages(db, thread_id)


def _from_line(message: dict) -> bytes:
    sender = message["mail_from"] or (message["from_addr"] if message["direction"] == "inbound" else "")
    sender = re.sub(r"\s", "", sender) or "MAILER-DAEMON"
    try:
        moment = parse_iso(message["created_at"])
    except ValueError:
        moment = dt.datetime.now(dt.timezone.utc)
    stamp = moment.astimezone(dt.timezone.utc).strftime("%a %b %d %H:%M:%S %Y")
    return f"From {sender} {stamp}".encode("utf-8", "replace")


# ---------------------------------------------------------------------------
# Topic drafts: a letter with the reader's identifying details removed

PLACEHOLDERS = ("[name]", "[email]", "[phone]", "[address]", "[link]")

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"]+")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d \t().\-/]{5,}\d(?![\w])")
_NOT_PHONE = re.compile(r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{4}\s*[-–]\s*\d{4})$")
_STREET_WORDS = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    "ter|circle|cir|highway|hwy|parkway|pkwy|square|sq|trail|close|crescent|row|alley"
)
_STREET = re.compile(
    r"\b\d{1,6}[A-Za-z]?,?[ \t]+(?:(?:[A-Z][\w'.-]*|\d+(?:st|nd|rd|th))[ \t]+){0,4}"
    rf"(?i:{_STREET_WORDS})\b\.?"
    r"(?:,?[ \t]*(?i:apt|apartment|suite|ste|unit|flat|#)\.?[ \t]*[\w-]+)?"
)
_PO_BOX = re.compile(r"(?i)\bP\.?\s?O\.?\s*Box\s+\d+")
_CITY_STATE_ZIP = re.compile(r"\b[A-Z][A-Za-z.' -]{1,30},\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b")
_MY_NAME = re.compile(r"(?i:\b(?:my name is|my name's|call me|signed,?)\s+)([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)?)")
_CLOSING = re.compile(
    r"^\s*(?:thanks|thank you|many thanks|best|best wishes|regards|kind regards|warm regards|"
    r"sincerely|yours|yours truly|love|cheers|warmly|all the best|take care|gratefully)\b[^\n]{0,24}$",
    re.IGNORECASE,
)
#: A closing counts only this close to the end of the letter.
_CLOSING_WINDOW = 6
_SIGNATURE_LINE = re.compile(r"^\s*[-–—~]*\s*((?:[A-Z][\w'.-]*\s*){1,4})\s*$")
_QUOTE_HEADER = re.compile(r"^\s*(on .{0,200} wrote:|-----\s*original message\s*-----)\s*$", re.IGNORECASE)
_GREETING = re.compile(r"^\s*(dear|hi|hello|hey)\b[^\n]{0,40}$", re.IGNORECASE)


def anonymize(text: str, names: list[str] = ()) -> str:
    """``text`` with names, email and web addresses, phone numbers and street addresses replaced.

    ``names`` are the reader's own names (the From display name); each is
    removed wherever it appears, whole and word by word, as are names the
    letter gives itself ("my name is ...", the name under the closing).
    Errs on the side of removing too much: a draft is read by a person
    before anything is published.
    """
    kept = _own_words(text)
    names = list(names) + _signature_names(kept)
    body = "\n".join(kept)
    body = _EMAIL.sub("[email]", body)
    body = _URL.sub("[link]", body)
    body = _PO_BOX.sub("[address]", body)
    body = _STREET.sub("[address]", body)
    body = _CITY_STATE_ZIP.sub("[address]", body)
    body = _UK_POSTCODE.sub("[address]", body)
    body = _PHONE.sub(_phone_or_not, body)
    names += [m.group(1) for m in _MY_NAME.finditer(body)]
    return _remove_names(body, names).strip()


def _own_words(text: str) -> list[str]:
    """The reader's own lines: no quoted replies, no signature block after '-- '."""
    kept = []
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if line.rstrip() in ("--", "-- "):
            break
        if _QUOTE_HEADER.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def _signature_names(lines: list[str]) -> list[str]:
    """Names signed under a closing ("Thank you,\\nDana") or on a last line ("- Dana")."""
    names = []
    start = max(0, len(lines) - _CLOSING_WINDOW)
    for i, line in enumerate(lines[start:], start=start):
        if _CLOSING.match(line):
            names += [m.group(1).strip() for m in map(_SIGNATURE_LINE.match, lines[i + 1:i + 4]) if m]
    if lines:
        last = re.match(r"^\s*[-–—~]+\s*([A-Z][\w'.-]*(?:\s+[A-Z][\w'.-]*){0,2})\s*$", lines[-1])
        if last:
            names.append(last.group(1))
    return names


def _phone_or_not(match: re.Match) -> str:
    text = match.group()
    digits = sum(ch.isdigit() for ch in text)
    if digits < 7 or digits > 15 or _NOT_PHONE.match(text.strip()):
        return text
    return "[phone]"


def _remove_names(text: str, names) -> str:
    words: set[str] = set()
    wholes: set[str] = set()
    for name in names:
        name = " ".join((name or "").replace('"', " ").split())
        if not name:
            continue
        wholes.add(name)
        for word in re.findall(r"[^\W\d_][\w'-]*", name):
            word = word.strip("'-")
            if len(word) >= 2 and word.casefold() not in _NOT_NAMES:
                words.add(word)
    for whole in sorted(wholes, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(whole)}(?!\w)", "[name]", text, flags=re.IGNORECASE)
    for word in sorted(words, key=len, reverse=True):
        text = re.sub(rf"(?<![\w\[]){re.escape(word)}(?![\w\]])", "[name]", text, flags=re.IGNORECASE)
    # "[name] [name]" is one person.
    return re.sub(r"\[name\](?:\s+\[name\])+", "[name]", text)


#: Words a display name may hold that are not names ("Dana (work)", "Mom of two").
_NOT_NAMES = frozenset({"mr", "mrs", "ms", "dr", "the", "and", "of", "a", "an", "mom", "dad", "work", "home"})


def topic_draft(db: sqlite_utils.Database, thread_id: int, *, config: Config, clock: Clock) -> str:
    """A Markdown topic (front matter for ``mailer topics import``) from the thread's letters.

    The reader's name, email and web addresses, phone numbers and street
    addresses are removed from the title and the text; the summary is left
    empty on purpose, so the draft cannot be imported before a person has
    read it and written one.
    """
    detail = thread_detail(db, thread_id)
    letters = [m for m in detail["messages"] if m["direction"] == "inbound" and m["kind"] == "letter"]
    if not letters:
        raise NothingToAnswer(f"thread {thread_id} holds no letter to draft a topic from")
    names = sorted({m["from_name"] for m in letters if m["from_name"]})
    title = anonymize(archive_subject(letters[0]["subject"]), names) or "A letter to the column"
    title = " ".join(title.split())
    slug = _slug(title) or f"letter-{thread_id}"
    texts = [anonymize(m["body_text"] or "", names) for m in letters]
    keywords = _keywords(title, "\n".join(texts))
    today = clock().astimezone(config.column.zone).date().isoformat()
    topics = [t["slug"] for m in detail["messages"] for t in m["topics"]]
    lines = [
        "---",
        f"# Draft from thread {thread_id}, written {today}. Identifying details were removed",
        "# automatically ([name], [email], [phone], [address], [link]): read it all before",
        "# publishing. Write the summary, check slug, url, keywords and date, then",
        "# `mailer topics import FILE`.",
    ]
    if topics:
        lines.append(f"# The acknowledgement linked: {', '.join(dict.fromkeys(topics))}")
    lines += [
        f"slug: {slug}",
        f"title: \"{title}\"",
        f"url: {config.column.site_url.rstrip('/')}/topics/{slug}",
        "summary: ",
        f"keywords: [{', '.join(keywords)}]",
        f"published: {today}",
        "---",
    ]
    for i, text in enumerate(texts):
        lines.append("")
        if i:
            lines.append("*The reader wrote again:*")
            lines.append("")
        lines += [f"> {line}".rstrip() for line in text.split("\n")]
    lines += ["", "— A reader", "", "<!-- Your answer here. -->", "", "Enjoy Your Changes!", ""]
    return "\n".join(lines)


def archive_subject(subject: str) -> str:
    """A subject without Re:/Fwd: prefixes, as written (not casefolded)."""
    return archive._REPLY_PREFIX.sub("", subject or "").strip()


def _keywords(title: str, text: str, limit: int = 6) -> list[str]:
    try:
        from .topics import letter_terms
    except ImportError:  # pragma: no cover - topics is part of the package
        return []
    placeholder_words = {p.strip("[]") for p in PLACEHOLDERS}
    terms = letter_terms(title, text)
    return [t for t in terms if t not in placeholder_words and t.isalpha() and len(t) >= 3][:limit]


def _slug(text: str, limit: int = 60) -> str:
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, " ")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = ascii_text.replace("'", "")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            break
        slug = candidate
    return slug


def _when_text(created_at: str, zone: dt.tzinfo) -> str:
    try:
        moment = parse_iso(created_at).astimezone(zone)
    except ValueError:
        return created_at
    return f"{moment:%a} {moment.day} {moment:%b %Y}"


# ---------------------------------------------------------------------------
# Forgetting a correspondent

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


# ---------------------------------------------------------------------------
# The desk password: hashes in config, checked in constant time

#: scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB of memory and ~0.1 s per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class PasswordHashError(ValueError):
    """A ``web.password_hash`` that is not in the format ``hash_password`` writes."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$key`` (salt and key in unpadded URL-safe base64) for config."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def parse_password_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    """The parts of a password hash; raises PasswordHashError saying what is wrong."""
    parts = (text or "").strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise PasswordHashError(
            "web.password_hash is not a hash made by `mailer desk hash-password` "
            "(expected scrypt$N$r$p$salt$key)"
        )
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, TypeError):
        raise PasswordHashError("web.password_hash: the numbers or the base64 parts are damaged") from None
    if n < 2 or n & (n - 1) or n > 2 ** 20 or not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * n * r * p > 2 ** 30:
        raise PasswordHashError("web.password_hash: scrypt parameters out of range")
    if len(salt) < 8 or len(key) < 16:
        raise PasswordHashError("web.password_hash: salt or key too short")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a hash_password string), in constant time."""
    n, r, p, salt, key = parse_password_hash(stored)
    candidate = hashlib.scrypt((password or "").encode("utf-8"), salt=salt, n=n, r=r, p=p,
                               maxmem=max(_SCRYPT_MAXMEM, 129 * n * r * p), dklen=len(key))
    return hmac.compare_digest(candidate, key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


__all__ = [
    "DeskError", "ThreadNotFound", "NothingToAnswer", "EmptyReply", "INBOX_VIEWS",
    "inbox", "list_threads", "view_counts", "thread_detail", "reflow", "search", "compose_reply", "reply", "mark",
    "export_mbox", "export_eml", "anonymize", "topic_draft", "forget", "ForgetReport",
    "register_address_columns", "register_eraser", "hash_password", "verify_password",
]
