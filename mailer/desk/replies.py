"""Answering a reader in the thread: the reply form, the greeting, the quoted letter."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
import sqlite_utils

from mailer.clock import Clock
from mailer.config import Config
from mailer.desk.errors import DeskError, EmptyReply, NothingToAnswer, ThreadNotFound
from mailer.desk.text import when_text
from mailer.desk.threads import thread_detail
from mailer.outbound import compose
from mailer.outbound.compose import (
    AddressError,
    Outgoing,
    build_message,
    make_address,
    render,
    reply_subject,
)
from mailer.outbound.outbox import enqueue
from mailer.store import archive
from mailer.topics import record_linked_topics

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
        "letter_date": when_text(letter["created_at"], config.column.zone),
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
    Each topic whose address the reply links is kept as a label of the letter
    (``topic_examples``), which topic matching learns from.
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
        # The topics the columnist links label the letter, so matching learns
        # the column's own choices (the letter's id is kept, never its text).
        record_linked_topics(db, draft.letter["id"], text, clock=clock)
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
    return compose.greeting((letter or {}).get("from_name"))


def mark(db: sqlite_utils.Database, thread_id: int, status: str) -> dict:
    """Set a thread's status (new, answered or archived); returns the updated thread."""
    if status not in archive.THREAD_STATUSES:
        raise DeskError(f"unknown status {status!r} (known: {', '.join(archive.THREAD_STATUSES)})")
    with db.atomic():
        cursor = db.execute("UPDATE threads SET status = ? WHERE id = ?", [status, thread_id])
        if cursor.rowcount == 0:
            raise ThreadNotFound(thread_id)
    return archive.get_thread(db, thread_id)
