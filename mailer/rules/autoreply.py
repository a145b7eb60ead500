"""When an automatic answer must NOT be sent (RFC 3834, and what real responders add).

The rules are listed before any code that answers, in the order they are
checked; the first that applies is the reason recorded with the letter.
Robots, lists, bounces and our own mail are never answered: an
acknowledgement to any of them is at best noise and at worst a mail loop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from mailer.outbound.compose import LOOP_HEADER
from mailer.rules import robots

#: Local parts that belong to machines, not people (compared casefolded).
_ROBOT_LOCAL_PARTS = re.compile(
    r"""^(
        mailer-daemon | postmaster | mailer | daemon | root | abuse | hostmaster | webmaster
      | listserv | majordomo | mailman | bounces? | bounce[-+.].* | .*[-+.]bounces?
      | no[-_.]?reply.* | do[-_.]?not[-_.]?reply.* | .*[-_.]no[-_.]?reply
      | owner-.* | .*-owner | .*-request | notifications? | auto[-_.]?reply.* | autoresponder
      | sympa | listmaster | ecartis | lyris
    )$""",
    re.IGNORECASE | re.VERBOSE,
)

_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help", "feedback-id", "x-campaign", "x-mailgun-tag")
_SUPPRESSING = ("all", "autoreply", "oof")


@dataclass(frozen=True)
class Letter:
    """The facts about an archived inbound message that the rules look at."""

    mail_from: str
    from_addr: str
    auto_submitted: str | None
    precedence: str | None
    headers: list[tuple[str, str]]
    is_delivery_report: bool
    subject: str = ""
    body_text: str = ""
    attachments: tuple[dict, ...] = ()

    @classmethod
    def from_row(cls, row: dict) -> "Letter":
        """Build from a row of the ``messages`` table."""
        meta = json.loads(row.get("meta") or "{}")
        return cls(
            mail_from=row.get("mail_from") or "",
            from_addr=row.get("from_addr") or "",
            auto_submitted=row.get("auto_submitted"),
            precedence=row.get("precedence"),
            headers=[tuple(h) for h in json.loads(row.get("headers") or "[]")],
            is_delivery_report=bool(meta.get("delivery_report")),
            subject=row.get("subject") or "",
            body_text=row.get("body_text") or "",
            attachments=tuple(json.loads(row.get("attachments") or "[]")),
        )

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def reason_not_to_answer(letter: Letter, *, own_addresses: frozenset[str], domain: str) -> str | None:
    """Why this message must not get an automatic answer, or None if it may."""
    sender = letter.mail_from.strip()
    if not sender or sender == "<>":
        return "null reverse path (a bounce or system notice)"
    # What is not a letter at all, by its content, whoever the envelope names.
    content_type, params = robots.content_type_of(letter.headers)
    reason = robots.report_reason(content_type, params)
    if reason:
        return reason
    if letter.is_delivery_report:
        return "delivery status report"
    attachments = list(letter.attachments)
    reason = (
        robots.aggregate_report_reason(letter.subject, f"{sender} {letter.from_addr}", letter.headers, attachments)
        or robots.forwarded_bounce_reason(letter.subject, letter.body_text, attachments)
        or robots.list_notice_reason(letter.subject, letter.headers)
        or robots.auto_reply_reason(letter.subject, letter.headers)
    )
    if reason:
        return reason
    for address in {sender.casefold(), letter.from_addr.casefold()} - {""}:
        local, _, host = address.rpartition("@")
        if address in own_addresses or host == domain.casefold():
            return f"sent from the column's own domain ({address})"
        if _ROBOT_LOCAL_PARTS.match(local):
            return f"automated sender ({local}@…)"
    loop = letter.header(LOOP_HEADER)
    if loop is not None and domain.casefold() in loop.casefold():
        return f"carries our own loop marker ({LOOP_HEADER})"
    auto = (letter.auto_submitted or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    if (letter.precedence or "").strip().lower() in ("bulk", "junk", "list"):
        return f"Precedence: {letter.precedence.strip().lower()}"
    for name in _LIST_HEADERS:
        if letter.header(name) is not None:
            return f"mailing-list or bulk header {name.title()}"
    suppress = (letter.header("x-auto-response-suppress") or "").lower()
    if any(token.strip() in _SUPPRESSING for token in suppress.split(",")):
        return "X-Auto-Response-Suppress asks for no automatic replies"
    return None
