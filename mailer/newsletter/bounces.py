"""Bounces at the ``bounces`` address: counting hard bounces.

Each digest copy goes out from ``bounces+TOKEN@domain`` (VERP, as Mailman
does), the token naming its subscriber, so a bounce to that address is about
that subscriber whatever the report says (or fails to say).

Reports come in many shapes. Standard ones (RFC 3464: a
``multipart/report; report-type=delivery-status``) are read with the email
package, for the status code and diagnostic; every other format (Exim,
qmail, Postfix's and Exchange's plain text, the large providers' own) is
left to flufl.bounce, Mailman's maintained detectors, which say which
addresses failed permanently and which only for now.

A recipient counts as a *hard* bounce when its DSN block says ``Action:
failed`` with a 5.x.x ``Status``, or flufl.bounce finds a permanent failure
for it. Soft bounces (4.x.x, ``delayed``) are kept in
the archive and otherwise ignored. One bounced message counts once, however
many reports arrive about it (when the report quotes the original
Message-ID). After ``subscribers.hard_bounce_limit`` hard bounces the
subscriber is suspended: no more digests until they are added again or
confirm again.
"""

from __future__ import annotations

import email
import email.parser
import json
import logging
from dataclasses import dataclass, field
from email import policy
from email.message import Message

import sqlite_utils

from mailer.clock import Clock, iso
from mailer.inbound.handling import PipelineContext
from mailer.newsletter.subscribers import (
    InvalidAddress,
    get_subscriber,
    get_subscriber_by_id,
    normalize_email,
    token_key,
)
from mailer.newsletter.verp import subscriber_for_verp_address
from mailer.store.archive import raw_bytes


@dataclass(frozen=True)
class RecipientStatus:
    """What a report says about one recipient."""

    recipient: str
    action: str
    status: str
    diagnostic: str = ""

    @property
    def hard(self) -> bool:
        """A permanent failure: Action failed with a 5.x.x status."""
        return self.action == "failed" and self.status.startswith("5")


@dataclass
class DeliveryReport:
    """The parts of a DSN that matter here."""

    recipients: list[RecipientStatus] = field(default_factory=list)
    original_message_id: str | None = None


log = logging.getLogger("mailer.bounces")

#: The Status recorded for a permanent failure found in a report with no RFC 3464 status.
PERMANENT_WITHOUT_STATUS = "5.0.0"


def read_bounce(raw: bytes) -> DeliveryReport:
    """Every recipient a bounce reports: RFC 3464 blocks first, then flufl.bounce's findings.

    flufl.bounce adds a ``failed 5.0.0`` entry for each permanently failing
    address the DSN did not already name, and a ``delayed`` one for each
    temporary failure. Never raises.
    """
    from flufl.bounce import all_failures  # imported here: only bounce handling needs it

    report = parse_report(raw)
    known = {status.recipient.casefold() for status in report.recipients}
    try:
        temporary, permanent = all_failures(email.message_from_bytes(raw))
    except Exception:  # noqa: BLE001 - a detector tripping on odd input means no findings, not a lost bounce
        log.warning("flufl.bounce could not read a bounce; only its RFC 3464 part (if any) is used")
        return report
    for found, action, status in ((permanent, "failed", PERMANENT_WITHOUT_STATUS), (temporary, "delayed", "4.0.0")):
        for address in sorted(a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in found):
            if address.casefold() not in known:
                known.add(address.casefold())
                report.recipients.append(RecipientStatus(address, action, status, "found by flufl.bounce"))
    return report


def parse_report(raw: bytes) -> DeliveryReport:
    """Read a delivery status report with the standard email package; never raises."""
    report = DeliveryReport()
    try:
        msg = email.parser.BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:  # noqa: BLE001 - not a message we can read: no report
        return report
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            for block in _status_blocks(part)[1:]:  # the first block is about the message
                status = _recipient_status(block)
                if status is not None:
                    report.recipients.append(status)
        elif ctype in ("text/rfc822-headers", "message/rfc822", "message/global-headers"):
            report.original_message_id = report.original_message_id or _original_message_id(part)
    return report


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, each as {lowercased name: value}."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):  # the parser split it into header blocks for us
        for sub in payload:
            blocks.append({k.lower(): " ".join(str(v).split()) for k, v in sub.items()})
        return blocks
    text = part.get_payload(decode=True) or b""
    current: dict[str, str] = {}
    last = None
    for line in text.decode("utf-8", "replace").splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
        elif line[:1] in " \t" and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _recipient_status(block: dict[str, str]) -> RecipientStatus | None:
    recipient = block.get("final-recipient") or block.get("original-recipient") or ""
    if ";" in recipient:
        recipient = recipient.split(";", 1)[1]
    recipient = recipient.strip().strip("<>").strip()
    if not recipient:
        return None
    status = (block.get("status") or "").split()[0] if block.get("status") else ""
    return RecipientStatus(
        recipient=recipient,
        action=(block.get("action") or "").strip().lower(),
        status=status,
        diagnostic=block.get("diagnostic-code", "")[:300],
    )


def _original_message_id(part: Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        value = payload[0].get("Message-ID")
    else:
        text = part.get_payload(decode=True) or b""
        headers = email.parser.BytesHeaderParser(policy=policy.default).parsebytes(text)
        value = headers.get("Message-ID")
    value = " ".join(str(value).split()) if value else ""
    return value or None


def record_hard_bounce(
    db: sqlite_utils.Database,
    subscriber: dict,
    status: RecipientStatus,
    *,
    report_id: int | None,
    original_message_id: str | None,
    limit: int,
    clock: Clock,
) -> str:
    """Count one hard bounce against a subscriber; suspend at ``limit``. Returns what happened."""
    now = iso(clock())
    cursor = db.execute(
        "INSERT OR IGNORE INTO subscriber_bounces (subscriber_id, report_id, status, original_message_id, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [subscriber["id"], report_id, status.status, original_message_id, now],
    )
    if not cursor.rowcount:
        return f"{subscriber['email']}: this message's bounce was already counted"
    db.execute(
        "UPDATE subscribers SET hard_bounces = hard_bounces + 1, last_bounce_at = ?, updated_at = ? WHERE id = ?",
        [now, now, subscriber["id"]],
    )
    count = db.execute("SELECT hard_bounces FROM subscribers WHERE id = ?", [subscriber["id"]]).fetchone()[0]
    if count >= limit and subscriber["status"] in ("confirmed", "pending"):
        db.execute(
            "UPDATE subscribers SET status = 'suspended', note = ? WHERE id = ?",
            [f"suspended after {count} hard bounces (last: {status.status})", subscriber["id"]],
        )
        return f"{subscriber['email']}: hard bounce {count}/{limit} ({status.status}), suspended"
    return f"{subscriber['email']}: hard bounce {count}/{limit} ({status.status})"


def handle_bounce(db: sqlite_utils.Database, row: dict, ctx: PipelineContext) -> str:
    """A message at the bounces address: count hard bounces of subscribers."""
    # Bounce threads need nobody's attention.
    db.execute("UPDATE threads SET status = 'archived' WHERE id = ? AND status = 'new'", [row["thread_id"]])
    report = read_bounce(raw_bytes(db, row["id"]))
    verp = _verp_subscriber(db, row, ctx)
    if verp is not None:
        return "bounce: " + _count_verp(db, row, ctx, verp, report)
    if not report.recipients:
        return "kept: not a bounce report (no failed recipient found)"
    outcomes = []
    for status in report.recipients:
        if not status.hard:
            outcomes.append(f"{status.recipient}: not a hard bounce ({status.action or '?'} {status.status or '?'})")
            continue
        try:
            subscriber = get_subscriber(db, normalize_email(status.recipient))
        except InvalidAddress:
            subscriber = None
        if subscriber is None:
            outcomes.append(f"{status.recipient}: not a subscriber")
            continue
        outcomes.append(record_hard_bounce(
            db, subscriber, status, report_id=row["id"],
            original_message_id=report.original_message_id,
            limit=ctx.config.subscribers.hard_bounce_limit, clock=ctx.clock,
        ))
    return "bounce: " + "; ".join(outcomes)


def _verp_subscriber(db: sqlite_utils.Database, row: dict, ctx: PipelineContext) -> dict | None:
    """The subscriber named by the envelope recipient's VERP tag, if it is genuine."""
    for address in json.loads(row.get("rcpt_to") or "[]"):
        subscriber_id = subscriber_for_verp_address(ctx.config, token_key(ctx.config), address)
        if subscriber_id is not None:
            return get_subscriber_by_id(db, subscriber_id)
    return None


def _count_verp(db, row: dict, ctx: PipelineContext, subscriber: dict, report: DeliveryReport) -> str:
    """A bounce of one subscriber's copy: hard if any failure in it is permanent."""
    hard = [status for status in report.recipients if status.hard]
    if not hard:
        if report.recipients:
            first = report.recipients[0]
            return f"{subscriber['email']}: not a hard bounce ({first.action or '?'} {first.status or '?'})"
        return f"{subscriber['email']}: not a hard bounce (no failure found in the report)"
    # A DSN's own status says more than flufl.bounce's generic 5.0.0.
    status = next((s for s in hard if s.status != PERMANENT_WITHOUT_STATUS), hard[0])
    return record_hard_bounce(
        db, subscriber, status, report_id=row["id"], original_message_id=report.original_message_id,
        limit=ctx.config.subscribers.hard_bounce_limit, clock=ctx.clock,
    )
