"""Acknowledging a reader's letter: who gets one, and what it says.

For every letter, in this order:

1. Read it for signs of crisis; if there are any, flag the thread urgent
   (whatever happens next: the columnist must see it first).
2. Decide whether an automatic answer may be sent at all (``policy``):
   robots, lists, bounces and our own mail never get one, and neither does
   an envelope sender that SPF says is forged (``fail``, checked by the
   pipeline before this handler runs: ``inbound/spf.py``).
3. Keep to one acknowledgement per reader per ``once_per_days``. A letter in
   crisis is the exception: its reader gets the crisis resources even if we
   acknowledged an ordinary letter yesterday (at most one such a day).
4. Keep to ``max_per_hour`` acknowledgements in all: past it, letters wait
   for the columnist (a flood of forged senders cannot turn the column into
   a mailer of strangers).
5. Pick the topics that fit the letter, render the templates, and queue the
   acknowledgement in the letter's thread, in the same transaction. The
   reader's subject and name are quoted, cut to ``QUOTE_LIMIT`` characters,
   so an acknowledgement never carries a sender's payload.

The decision is returned as the letter's ``disposition`` and kept with it.

What needs only the letter (the crisis reading, the robot rules, the topics,
rendering and building the message) is done by :func:`prepare_letter` on a
read connection before the write transaction; :func:`handle_letter` then
writes the flag and decides the SPF verdict and the limits (steps 3-4) from
the archive as it is inside the transaction, so a preparation never sends
what the limits forbid.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from email.message import EmailMessage

import sqlite_utils

from mailer import topics
from mailer.clock import iso
from mailer.inbound.handling import PipelineContext
from mailer.outbound.compose import (
    AUTO_REPLY_HEADERS,
    AddressError,
    Outgoing,
    answering,
    build_message,
    greeting,
    make_address,
    render,
    reply_subject,
)
from mailer.outbound.outbox import enqueue
from mailer.rules import crisis
from mailer.rules.autoreply import Letter, reason_not_to_answer

#: A letter in crisis may bypass the weekly limit, but not more than this often.
CRISIS_REPEAT = dt.timedelta(days=1)
#: The most of a reader's subject or name an acknowledgement repeats.
QUOTE_LIMIT = 100


def quoted(text: str | None, limit: int = QUOTE_LIMIT) -> str:
    """The reader's words on one line, cut at a word to at most ``limit`` characters (… marks a cut)."""
    words = " ".join((text or "").split())
    if len(words) <= limit:
        return words
    cut = words[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


@dataclass
class PreparedLetter:
    """What acknowledging a letter computes from the letter alone, before its write transaction.

    ``refusal`` is the disposition when no acknowledgement may be sent
    whatever the archive holds (turned off, a robot's or a list's mail);
    ``message`` is the acknowledgement, built, or None when there is a
    refusal, the address cannot be written (``address_error``), or the
    archive already showed the reader acknowledged (the handler decides that
    for good, and builds it then if it must).
    """

    assessment: crisis.CrisisAssessment
    refusal: str | None = None
    chosen: list = field(default_factory=list)
    fell_back: bool = False
    message: EmailMessage | None = None
    address_error: str | None = None


def prepare_letter(db: sqlite_utils.Database, row: dict, ctx: PipelineContext) -> PreparedLetter:
    """Read the letter for crisis, and build its acknowledgement if one may be sent (reads only)."""
    config = ctx.config
    assessment = crisis.assess(row["subject"] or "", row["body_text"] or "")
    if not config.acknowledgements.enabled:
        return PreparedLetter(assessment, "not answered: acknowledgements are turned off")
    reason = reason_not_to_answer(
        Letter.from_row(row), own_addresses=config.own_addresses(), domain=config.smtp.domain
    )
    if reason:
        return PreparedLetter(assessment, f"not answered: {reason}")
    prepared = PreparedLetter(assessment)
    if _limited(db, row, ctx, assessment.urgent) is None:
        # Most letters: build it now. (A reader acknowledged lately is
        # refused by the handler anyway: no need to build theirs.)
        _compose(db, row, ctx, prepared)
    return prepared


def handle_letter(
    db: sqlite_utils.Database, row: dict, ctx: PipelineContext, prepared: PreparedLetter | None = None
) -> str:
    """Flag, decide and (maybe) queue the acknowledgement of one archived letter.

    ``prepared`` is what :func:`prepare_letter` computed before the write
    transaction; without it, it is computed here. What depends on the
    archive (the limits, the thread) is decided here, in the transaction.
    """
    if prepared is None:
        prepared = prepare_letter(db, row, ctx)
    assessment = prepared.assessment
    if assessment.urgent:
        db.execute("UPDATE threads SET urgent = 1 WHERE id = ?", [row["thread_id"]])
        _add_meta(db, row["id"], {"crisis": list(assessment.signals)})
    if prepared.refusal:
        return prepared.refusal

    verdict = json.loads(row["meta"] or "{}").get("spf") or {}
    if verdict.get("result") == "fail":
        return ("not answered: SPF fail: the envelope sender's domain does not allow the client that "
                "sent it (a forged sender); kept for the columnist")
    limited = _limited(db, row, ctx, assessment.urgent)
    if limited:
        return limited
    cap = ctx.config.acknowledgements.max_per_hour
    if cap and _acknowledgements_since(db, ctx.clock() - dt.timedelta(hours=1), cap) >= cap:
        return (f"not answered: the cap of {cap} acknowledgements an hour (acknowledgements.max_per_hour) "
                "is reached; kept for the columnist")

    if prepared.message is None and prepared.address_error is None:
        _compose(db, row, ctx, prepared)
    if prepared.address_error is not None:
        return f"not answered: {prepared.address_error}"
    # RFC 3834 3.3: a null reverse path, so a failed acknowledgement bounces nowhere.
    stored, outbox_id = enqueue(
        db, prepared.message, kind="acknowledgement", mail_from="", rcpt_to=[row["mail_from"]],
        clock=ctx.clock, thread_id=row["thread_id"],
        meta={
            "answers": row["id"],
            "topics": [t.slug for t in prepared.chosen],
            "fell_back": prepared.fell_back,
            "crisis": list(assessment.signals),
        },
    )
    n = len(prepared.chosen)
    return f"acknowledged: {n} topic{'' if n == 1 else 's'} (message {stored.message_id}, outbox {outbox_id})"


def _limited(db, row: dict, ctx: PipelineContext, urgent: bool) -> str | None:
    """Why this reader may not be acknowledged again so soon, or None."""
    correspondent = row["mail_from"].casefold()
    now = ctx.clock()
    if urgent:
        if _acknowledged_since(db, correspondent, now - CRISIS_REPEAT, crisis_only=True):
            return "not answered: crisis resources already sent to this reader today"
        return None
    days = ctx.config.acknowledgements.once_per_days
    earlier = days and _acknowledged_since(db, correspondent, now - dt.timedelta(days=days))
    if earlier:
        # When, so the desk can say "acknowledged 2 days ago".
        return f"not answered: acknowledged {earlier} (at most once every {days} days)"
    return None


def _compose(db, row: dict, ctx: PipelineContext, prepared: PreparedLetter) -> None:
    """Pick the topics, render the templates and build the acknowledgement into ``prepared``."""
    config = ctx.config
    urgent = prepared.assessment.urgent
    recipient = row["mail_from"]
    prepared.chosen, prepared.fell_back = topics.topics_for_letter(
        db, row["subject"] or "", row["body_text"] or "",
        limit=config.acknowledgements.topics_per_letter, urgent=urgent,
    )
    reader_name = quoted(row["from_name"]) if (row["from_addr"] or "").casefold() == recipient.casefold() else ""
    subject = quoted(row["subject"])
    body = render(ctx.templates, "acknowledgement", {
        "reader_name": reader_name,
        "greeting": greeting(reader_name),
        "name": reader_name,
        "subject": subject,
        # The reader's words, marked as theirs, for templates that quote them.
        "subject_quoted": f"“{subject}”" if subject else "",
        "topics": prepared.chosen,
        "fell_back": prepared.fell_back,
        "crisis": urgent,
        # The same flag under the name the desk uses, and the resources,
        # which every acknowledgement may show (the detector can miss a letter).
        "urgent": urgent,
        "crisis_resources": config.crisis.resources.strip(),
        "helplines": config.crisis,
        "letters_address": config.addresses.letters,
        "column": config.column,
    })
    try:
        outgoing = Outgoing(
            sender=make_address(config.addresses.letters, config.column.name),
            recipient=make_address(recipient, reader_name),
            subject=reply_subject(subject),
            body=body,
            domain=config.smtp.domain,
            extra_headers=AUTO_REPLY_HEADERS,
            **answering(row),
        )
    except AddressError as exc:
        prepared.address_error = str(exc)
        return
    prepared.message = build_message(outgoing, clock=ctx.clock)


def _acknowledged_since(db, correspondent: str, since: dt.datetime, *, crisis_only: bool = False) -> str | None:
    """When this reader was last acknowledged since ``since`` (an archive timestamp), or None."""
    sql = (
        "SELECT meta, created_at FROM messages WHERE correspondent = ? AND kind = 'acknowledgement' "
        "AND direction = 'outbound' AND created_at >= ? ORDER BY created_at DESC"
    )
    for meta, created_at in db.execute(sql, [correspondent, iso(since)]):
        if not crisis_only or json.loads(meta or "{}").get("crisis"):
            return created_at
    return None


def _acknowledgements_since(db, since: dt.datetime, cap: int) -> int:
    """How many acknowledgements were queued since ``since`` (counting stops at ``cap``)."""
    return db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM messages WHERE kind = 'acknowledgement' AND direction = 'outbound' "
        "AND created_at >= ? LIMIT ?)", [iso(since), cap],
    ).fetchone()[0]


def _add_meta(db, message_id: int, values: dict) -> None:
    meta = json.loads(db.execute("SELECT meta FROM messages WHERE id = ?", [message_id]).fetchone()[0] or "{}")
    meta.update(values)
    db.execute("UPDATE messages SET meta = ? WHERE id = ?", [json.dumps(meta), message_id])
