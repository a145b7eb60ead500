"""Mail commands: what a letter to the subscribe or unsubscribe address asks for.

These are pipeline handlers. A mail to ``subscribe@`` is either a reply that
confirms a pending request or a new request; a mail to ``unsubscribe@``
carries a token or comes from the subscriber's own address: the envelope
sender and the From header must agree, because a From header costs nothing to
forge. When they differ and there is no token, the subscriber is asked by
mail instead (a link that unsubscribes), at most once per
``subscribers.confirmation_interval_hours``.
"""

from __future__ import annotations

import datetime as dt
import json

import sqlite_utils

from mailer.clock import iso, parse_iso
from mailer.inbound.handling import PipelineContext
from mailer.newsletter.subscribers import (
    CONFIRM_IN_TEXT,
    UNSUBSCRIBE_IN_TEXT,
    InvalidAddress,
    TokenCheck,
    check_confirm_token,
    confirm_subscriber,
    get_subscriber,
    get_subscriber_by_id,
    normalize_email,
    remember_thread,
    request_subscription,
    subscriber_for_unsubscribe_token,
    token_key,
    unsubscribe,
    unsubscribe_token,
    unsubscribe_url,
)
from mailer.outbound.compose import (
    AUTO_REPLY_HEADERS,
    AddressError,
    Outgoing,
    answering,
    build_message,
    make_address,
    render,
    reply_subject,
)
from mailer.outbound.outbox import enqueue
from mailer.rules.autoreply import Letter, reason_not_to_answer


def handle_subscribe(db: sqlite_utils.Database, row: dict, ctx: PipelineContext) -> str:
    """A mail to the subscribe address: a reply that confirms, or a new request."""
    config = ctx.config
    reason = reason_not_to_answer(
        Letter.from_row(row), own_addresses=config.own_addresses(), domain=config.smtp.domain
    )
    if reason:
        return f"not answered: {reason}"
    sender = row["from_addr"] or row["mail_from"]
    try:
        email = normalize_email(sender)
    except InvalidAddress as exc:
        return f"not answered: {exc}"
    confirmed = _confirm_by_reply(db, row, email, ctx)
    if confirmed:
        return confirmed
    result = request_subscription(
        db, email, config=config, templates=ctx.templates, clock=ctx.clock, source="mail", request=row,
    )
    if result.subscriber_id is not None:
        remember_thread(db, result.subscriber_id, row["thread_id"])
    return result.disposition


def _confirm_by_reply(db, row: dict, email: str, ctx: PipelineContext) -> str | None:
    """Confirm when the mail answers a confirmation: by its token, or by threading."""
    now = ctx.clock()
    checks: list[TokenCheck] = []
    for text in (row["subject"] or "", row["body_text"] or ""):
        for token in CONFIRM_IN_TEXT.findall(text):
            checks.append(check_confirm_token(db, token, now=now))
    # The token proves itself; a reply found only by its threading headers
    # must also come from the address that was asked.
    refs = [row["in_reply_to"]] + list(reversed(json.loads(row["references_ids"] or "[]")))
    for ref in filter(None, refs):
        for token_row in db.query("SELECT * FROM subscription_tokens WHERE message_id = ?", [ref]):
            subscriber = get_subscriber_by_id(db, token_row["subscriber_id"])
            if subscriber and subscriber["email"] == email:
                state = "used" if token_row["used_at"] else (
                    "expired" if parse_iso(token_row["expires_at"]) <= now else "valid")
                checks.append(TokenCheck(state, subscriber, token_row))
    if not checks:
        return None
    valid = next((c for c in checks if c.state == "valid"), None)
    if valid is None:
        subscriber = checks[0].subscriber
        if subscriber and subscriber["status"] == "confirmed":
            return "not answered: a reply to a confirmation, but the subscription is already confirmed"
        return None  # expired or unknown: treat as a new request (rate limits apply)
    subscriber = valid.subscriber
    confirm_subscriber(db, subscriber["id"], now=iso(now), how="reply")
    remember_thread(db, subscriber["id"], row["thread_id"])
    notice = _send_notice(db, "notice_subscribed", subscriber["email"], row, ctx, {
        "unsubscribe_url": unsubscribe_url(ctx.config, unsubscribe_token(token_key(ctx.config), subscriber["id"])),
    })
    return f"confirmed by reply (subscriber {subscriber['id']}; {notice})"


def handle_unsubscribe(db: sqlite_utils.Database, row: dict, ctx: PipelineContext) -> str:
    """A mail to the unsubscribe address: stop digests at once, then say so (to people only).

    Acts on a valid token, or on a sender whose envelope and From agree;
    otherwise the subscriber named is asked to confirm by mail.
    """
    config = ctx.config
    subscriber = _subscriber_by_token(db, row, ctx)
    if subscriber is None:
        envelope, header = _address_or_none(row["mail_from"]), _address_or_none(row["from_addr"])
        if envelope is not None and header in (None, envelope):
            subscriber = get_subscriber(db, envelope)
        else:
            named = [get_subscriber(db, a) for a in (header, envelope) if a is not None]
            named = [s for s in named if s is not None]
            if named:
                return _ask_to_confirm(db, named[0], row, ctx)
    if subscriber is None:
        # Saying "you were never subscribed" would tell a stranger who is.
        return "kept: not from a subscriber and no valid unsubscribe token; nothing to do"
    changed = unsubscribe(db, subscriber["id"], clock=ctx.clock, how="mail to the unsubscribe address")
    remember_thread(db, subscriber["id"], row["thread_id"])
    if not changed:
        return f"not answered: subscriber {subscriber['id']} had already unsubscribed"
    reason = reason_not_to_answer(
        Letter.from_row(row), own_addresses=config.own_addresses(), domain=config.smtp.domain
    )
    if reason:
        return f"unsubscribed subscriber {subscriber['id']} (no notice: {reason})"
    notice = _send_notice(db, "notice_unsubscribed", subscriber["email"], row, ctx, {})
    return f"unsubscribed subscriber {subscriber['id']} ({notice})"


def _subscriber_by_token(db, row: dict, ctx: PipelineContext) -> dict | None:
    for text in (row["subject"] or "", row["body_text"] or ""):
        for token in UNSUBSCRIBE_IN_TEXT.findall(text):
            subscriber_id = subscriber_for_unsubscribe_token(token_key(ctx.config), token)
            if subscriber_id is not None:
                return get_subscriber_by_id(db, subscriber_id)
    return None


def _address_or_none(value: str | None) -> str | None:
    try:
        return normalize_email(value) if value else None
    except InvalidAddress:
        return None


#: The kind of notice that asks a subscriber to confirm an unsubscribe someone else sent.
CONFIRM_UNSUBSCRIBE = "notice_confirm_unsubscribe"


def _ask_to_confirm(db, subscriber: dict, row: dict, ctx: PipelineContext) -> str:
    """Mail the subscriber a link that unsubscribes, instead of acting on a sender we cannot trust."""
    if subscriber["status"] == "unsubscribed":
        return f"not answered: subscriber {subscriber['id']} had already unsubscribed"
    hours = ctx.config.subscribers.confirmation_interval_hours
    since = ctx.clock() - dt.timedelta(hours=hours)
    recent = db.execute(
        "SELECT 1 FROM messages WHERE kind = 'notice' AND correspondent = ? AND created_at > ? "
        "AND json_extract(meta, '$.notice') = ? LIMIT 1",
        [subscriber["email"], iso(since), CONFIRM_UNSUBSCRIBE],
    ).fetchone()
    if recent:
        return (f"kept: envelope sender and From differ, no token; subscriber {subscriber['id']} was "
                f"already asked to confirm within {hours:g} hours")
    notice = _send_notice(db, CONFIRM_UNSUBSCRIBE, subscriber["email"], row, ctx, {
        "unsubscribe_url": unsubscribe_url(ctx.config, unsubscribe_token(token_key(ctx.config), subscriber["id"])),
    })
    return (f"not unsubscribed: envelope sender and From differ and there is no token; asked subscriber "
            f"{subscriber['id']} to confirm ({notice})")


def _send_notice(db, template: str, email: str, request: dict, ctx: PipelineContext, extra: dict) -> str:
    config = ctx.config
    body = render(ctx.templates, template, {
        "column": config.column, "email": email,
        "subscribe_address": config.addresses.subscribe, **extra,
    })
    try:
        outgoing = Outgoing(
            sender=make_address(config.addresses.letters, config.column.name),
            recipient=make_address(email),
            subject=reply_subject(request["subject"] or config.column.name),
            body=body,
            domain=config.smtp.domain,
            extra_headers=AUTO_REPLY_HEADERS,
            **answering(request),
        )
    except AddressError as exc:
        return f"no notice: {exc}"
    stored, outbox_id = enqueue(
        db, build_message(outgoing, clock=ctx.clock), kind="notice", mail_from="", rcpt_to=[email],
        clock=ctx.clock, thread_id=request["thread_id"], meta={"notice": template},
    )
    return f"notice queued as message {stored.message_id}, outbox {outbox_id}"
