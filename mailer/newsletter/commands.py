"""Mail commands: what a letter to the subscribe or unsubscribe address asks for.

These are pipeline handlers. A mail to ``subscribe@`` is either a reply that
confirms a pending request or a new request; a mail to ``unsubscribe@``
carries a token or comes from the subscriber's own address.
"""

from __future__ import annotations

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
    """A mail to the unsubscribe address: stop digests at once, then say so (to people only)."""
    config = ctx.config
    subscriber = None
    for text in (row["subject"] or "", row["body_text"] or ""):
        for token in UNSUBSCRIBE_IN_TEXT.findall(text):
            subscriber_id = subscriber_for_unsubscribe_token(token_key(config), token)
            if subscriber_id is not None:
                subscriber = get_subscriber_by_id(db, subscriber_id)
                break
        if subscriber:
            break
    if subscriber is None:
        try:
            subscriber = get_subscriber(db, normalize_email(row["from_addr"] or row["mail_from"]))
        except InvalidAddress:
            subscriber = None
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
