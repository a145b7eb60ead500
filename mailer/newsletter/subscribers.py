"""Subscribers of the weekly digest: double opt-in, unsubscribe, import and export.

A reader becomes a subscriber in two steps. Asking (a mail to the
``subscribe`` address, or ``mailer subscribers add``) creates a *pending*
row and sends one confirmation message; following its link, or replying to
it, makes the row *confirmed*. Only confirmed subscribers get digests.

Tokens, and what the database keeps of them:

* A confirmation token is 192 random bits, sent once, valid for
  ``subscribers.confirm_expiry_hours`` and usable once. Only its SHA-256 is
  stored, so a copy of the database cannot confirm anybody.
* An unsubscribe token is per subscriber and stable: the subscriber's id and
  an HMAC-SHA256 of it under a secret key kept *outside* the database
  (``subscribers.token_key_file``). Nothing token-like is stored at all; a
  link is checked by recomputing the MAC.

Repeated requests do not spam an address: at most one confirmation per
``subscribers.confirmation_interval_hours``; an address that is already
confirmed gets nothing. Mail to the ``unsubscribe`` address, the link in a
digest and an RFC 8058 one-click POST all unsubscribe at once.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

import jinja2
import sqlite_utils

from mailer.clock import Clock, iso, parse_iso
from mailer.config import Config
from mailer.outbound.compose import (
    AUTO_REPLY_HEADERS,
    AddressError,
    Outgoing,
    answering,
    build_message,
    make_address,
    render,
)
from mailer.outbound.outbox import enqueue

STATUSES = ("pending", "confirmed", "unsubscribed", "suspended")

#: Bytes of randomness in a confirmation token (32 characters of base64url).
CONFIRM_TOKEN_BYTES = 24
#: Length of an unsubscribe token: 8 bytes of id + 16 bytes of MAC, base64url.
UNSUBSCRIBE_TOKEN_CHARS = 32

# Tokens are base64url, so they may begin or end with "-": a \b there would
# miss one token in 64, so the edges are spelled out as look-arounds.
_TOKEN_IN_TEXT = r"[\s:]+([A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])"
CONFIRM_IN_TEXT = re.compile(r"\bconfirm" + _TOKEN_IN_TEXT, re.IGNORECASE)
UNSUBSCRIBE_IN_TEXT = re.compile(r"\bunsubscribe" + _TOKEN_IN_TEXT, re.IGNORECASE)
_LOCAL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"^{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM})*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidAddress(ValueError):
    """An address that cannot be subscribed; the message says why, for a person."""


class UnknownSubscriber(LookupError):
    """No subscriber has this address."""


# --------------------------------------------------------------------------
# Addresses


def normalize_email(text: str) -> str:
    """The canonical form of a subscriber's address, or InvalidAddress saying why.

    Accepts ``Name <addr>`` and surrounding spaces; lowercases the whole
    address (mail systems treat local parts case-insensitively in practice,
    and one person must not become two subscribers); writes an international
    domain in its ASCII (IDNA) form. Quoted or non-ASCII local parts are
    refused rather than guessed at.
    """
    value = (text or "").strip()
    if "<" in value and value.endswith(">"):
        value = value[value.rindex("<") + 1:-1].strip()
    if not value:
        raise InvalidAddress("empty address")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidAddress("an address cannot contain spaces or control characters")
    if value.count("@") != 1:
        raise InvalidAddress("an address needs exactly one @")
    local, domain = value.split("@")
    if not local or not domain:
        raise InvalidAddress("an address needs a name before the @ and a domain after it")
    if not local.isascii() or not _LOCAL_PART.match(local) or len(local) > 64:
        raise InvalidAddress(f"{local!r} is not a usable mailbox name (before the @)")
    domain = domain.rstrip(".").lower()
    try:
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidAddress(f"{domain!r} is not a valid domain") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress(f"{domain!r} is not a valid domain (it needs a dot, like example.org)")
    if labels[-1].isdigit():
        raise InvalidAddress(f"{domain!r} is not a domain name")
    address = f"{local.lower()}@{ascii_domain}"
    if len(address) > 254:
        raise InvalidAddress("the address is longer than 254 characters")
    return address


# --------------------------------------------------------------------------
# Tokens


def hash_token(token: str) -> str:
    """What the database keeps of a confirmation token."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def load_token_key(path: Path) -> bytes:
    """The secret that signs unsubscribe links, created (mode 0600) on first use."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            data = path.read_bytes()
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key.hex().encode("ascii") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            return key
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < 16:
        raise ValueError(f"{path}: not a token key (expected 64 hex digits) (subscribers.token_key_file)")
    return key


_KEYS: dict[str, bytes] = {}


def token_key(config: Config) -> bytes:
    """The unsubscribe-link key for ``config`` (read once per process)."""
    path = str(config.subscribers.token_key_file)
    if path not in _KEYS:
        _KEYS[path] = load_token_key(Path(path))
    return _KEYS[path]


def unsubscribe_token(key: bytes, subscriber_id: int) -> str:
    """The opaque, stable token in a subscriber's unsubscribe links."""
    ident = struct.pack(">Q", subscriber_id)
    mac = hmac.new(key, b"mailer-unsubscribe:" + ident, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(ident + mac).decode("ascii")


def subscriber_for_unsubscribe_token(key: bytes, token: str) -> int | None:
    """The subscriber id a genuine unsubscribe token names, or None."""
    if len(token or "") != UNSUBSCRIBE_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 24:
        return None
    (subscriber_id,) = struct.unpack(">Q", raw[:8])
    return subscriber_id if hmac.compare_digest(unsubscribe_token(key, subscriber_id), token) else None


def unsubscribe_url(config: Config, token: str) -> str:
    """The public page that unsubscribes (GET shows it, POST acts)."""
    return f"{config.web.public_url.rstrip('/')}/unsubscribe/{token}"


def unsubscribe_mailto(config: Config, token: str) -> str:
    """The mailto: form of the unsubscribe link (List-Unsubscribe)."""
    return f"mailto:{config.addresses.unsubscribe}?subject=unsubscribe%20{token}"


def confirm_url(config: Config, token: str) -> str:
    """The public page that confirms a subscription."""
    return f"{config.web.public_url.rstrip('/')}/subscribe/confirm/{token}"


# --------------------------------------------------------------------------
# Reading


def get_subscriber(db: sqlite_utils.Database, email: str) -> dict | None:
    """The subscriber row for an (already normalised) address, or None."""
    rows = list(db.query("SELECT * FROM subscribers WHERE email = ?", [email]))
    return rows[0] if rows else None


def get_subscriber_by_id(db: sqlite_utils.Database, subscriber_id: int) -> dict | None:
    """The subscriber row with this id, or None."""
    rows = list(db.query("SELECT * FROM subscribers WHERE id = ?", [subscriber_id]))
    return rows[0] if rows else None


def iter_subscribers(db: sqlite_utils.Database, *, status: str | None = None) -> Iterator[dict]:
    """Every subscriber (or those in ``status``), oldest first, streamed."""
    if status:
        return db.query("SELECT * FROM subscribers WHERE status = ? ORDER BY id", [status])
    return db.query("SELECT * FROM subscribers ORDER BY id")


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    """How many subscribers are in each status."""
    found = {status: 0 for status in STATUSES}
    for status, n in db.execute("SELECT status, count(*) FROM subscribers GROUP BY status"):
        found[status] = n
    return found


# --------------------------------------------------------------------------
# Changing


def _insert(db, email: str, status: str, source: str, now: str) -> int:
    cursor = db.execute(
        "INSERT INTO subscribers (email, status, source, created_at, updated_at, confirmed_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [email, status, source, now, now, now if status == "confirmed" else None],
    )
    return cursor.lastrowid


def add_confirmed(db: sqlite_utils.Database, email: str, *, clock: Clock, source: str = "cli") -> tuple[dict, bool]:
    """Subscribe an address that agreed elsewhere; returns (row, changed).

    Re-adding a suspended or unsubscribed address confirms it again and
    clears its bounce count.
    """
    email = normalize_email(email)
    now = iso(clock())
    with db.atomic():
        row = get_subscriber(db, email)
        if row is None:
            _insert(db, email, "confirmed", source, now)
            changed = True
        elif row["status"] == "confirmed":
            changed = False
        else:
            db.execute(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, updated_at = ?, "
                "unsubscribed_at = NULL, hard_bounces = 0, note = ? WHERE id = ?",
                [now, now, f"confirmed by {source}", row["id"]],
            )
            changed = True
    return get_subscriber(db, email), changed


def unsubscribe(db: sqlite_utils.Database, subscriber_id: int, *, clock: Clock, how: str) -> bool:
    """Stop digests to a subscriber at once; False if they had already left."""
    now = iso(clock())
    cursor = db.execute(
        "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ?, updated_at = ?, note = ? "
        "WHERE id = ? AND status != 'unsubscribed'",
        [now, now, how, subscriber_id],
    )
    if cursor.rowcount:
        # Outstanding confirmation links must not bring them back.
        db.execute(
            "UPDATE subscription_tokens SET used_at = ? WHERE subscriber_id = ? AND used_at IS NULL",
            [now, subscriber_id],
        )
    return bool(cursor.rowcount)


def remove(db: sqlite_utils.Database, email: str, *, clock: Clock) -> bool:
    """``subscribers remove``: unsubscribe by address. Raises UnknownSubscriber."""
    row = get_subscriber(db, normalize_email(email))
    if row is None:
        raise UnknownSubscriber(email)
    with db.atomic():
        return unsubscribe(db, row["id"], clock=clock, how="removed by the columnist")


@dataclass
class ConfirmationRequest:
    """The outcome of asking for a subscription."""

    disposition: str
    subscriber_id: int | None = None
    sent: bool = False
    outbox_id: int | None = None


def request_subscription(
    db: sqlite_utils.Database,
    email: str,
    *,
    config: Config,
    templates: jinja2.Environment,
    clock: Clock,
    source: str,
    request: dict | None = None,
) -> ConfirmationRequest:
    """Record a request to subscribe and queue one confirmation, unless that would be spam.

    ``request`` is the archived inbound message that asked (the confirmation
    then answers it in its thread), or None for the command line.
    """
    email = normalize_email(email)
    now = clock()
    with db.atomic():
        row = get_subscriber(db, email)
        if row is not None and row["status"] == "confirmed":
            return ConfirmationRequest("not sent: already subscribed", row["id"])
        if row is None:
            subscriber_id = _insert(db, email, "pending", source, iso(now))
        else:
            subscriber_id = row["id"]
            interval = dt.timedelta(hours=config.subscribers.confirmation_interval_hours)
            last = db.execute(
                "SELECT max(created_at) FROM subscription_tokens WHERE subscriber_id = ?", [subscriber_id]
            ).fetchone()[0]
            if last and interval and parse_iso(last) > now - interval:
                return ConfirmationRequest(
                    f"not sent: a confirmation already went to this address at {last} "
                    f"(at most one every {config.subscribers.confirmation_interval_hours:g} hours)",
                    subscriber_id,
                )
        token = secrets.token_urlsafe(CONFIRM_TOKEN_BYTES)
        expires = now + dt.timedelta(hours=config.subscribers.confirm_expiry_hours)
        body = render(templates, "confirmation", {
            "column": config.column,
            "email": email,
            "confirm_url": confirm_url(config, token),
            "token": token,
            "subscribe_address": config.addresses.subscribe,
            "expires_hours": config.subscribers.confirm_expiry_hours,
        })
        try:
            outgoing = Outgoing(
                sender=make_address(config.addresses.subscribe, config.column.name),
                recipient=make_address(email),
                # No token in the subject (it reads like spam): a reply is
                # matched by In-Reply-To/References to this Message-ID.
                subject=f"Confirm your subscription to {config.column.name}",
                body=body,
                domain=config.smtp.domain,
                extra_headers={"Reply-To": config.addresses.subscribe, **AUTO_REPLY_HEADERS},
                **answering(request),
            )
        except AddressError as exc:
            return ConfirmationRequest(f"not sent: {exc}", subscriber_id)
        message = build_message(outgoing, clock=clock)
        db.execute(
            "INSERT INTO subscription_tokens (token_hash, subscriber_id, created_at, expires_at, message_id) "
            "VALUES (?, ?, ?, ?, ?)",
            [hash_token(token), subscriber_id, iso(now), iso(expires), message["Message-ID"]],
        )
        thread_id = request["thread_id"] if request else _thread_of(db, subscriber_id)
        # A null reverse path (RFC 3834): a confirmation that bounces bounces nowhere.
        stored, outbox_id = enqueue(
            db, message, kind="confirmation", mail_from="", rcpt_to=[email], clock=clock,
            thread_id=thread_id, meta={"subscriber": subscriber_id},
        )
        remember_thread(db, subscriber_id, stored.thread_id)
    return ConfirmationRequest(
        f"confirmation sent (message {stored.message_id}, outbox {outbox_id})",
        subscriber_id, sent=True, outbox_id=outbox_id,
    )


def _thread_of(db, subscriber_id: int) -> int | None:
    row = db.execute("SELECT thread_id FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    return row[0] if row else None


def remember_thread(db, subscriber_id: int, thread_id: int) -> None:
    """Keep the subscriber's correspondence in one thread, off the columnist's inbox."""
    db.execute(
        "UPDATE subscribers SET thread_id = coalesce(thread_id, ?) WHERE id = ?", [thread_id, subscriber_id]
    )
    # Subscription mail is handled by the machine; nothing waits for the columnist.
    db.execute("UPDATE threads SET status = 'archived' WHERE id = ? AND status = 'new'", [thread_id])


@dataclass
class TokenCheck:
    """What a confirmation token is worth right now (looking changes nothing)."""

    state: str  # "valid", "used", "expired" or "unknown"
    subscriber: dict | None = None
    token_row: dict | None = None


def check_confirm_token(db: sqlite_utils.Database, token: str, *, now: dt.datetime) -> TokenCheck:
    """Look a confirmation token up by its hash, without using it."""
    if not token or len(token) > 100:
        return TokenCheck("unknown")
    rows = list(db.query("SELECT * FROM subscription_tokens WHERE token_hash = ?", [hash_token(token)]))
    if not rows:
        return TokenCheck("unknown")
    token_row = rows[0]
    subscriber = get_subscriber_by_id(db, token_row["subscriber_id"])
    if token_row["used_at"]:
        return TokenCheck("used", subscriber, token_row)
    if parse_iso(token_row["expires_at"]) <= now:
        return TokenCheck("expired", subscriber, token_row)
    return TokenCheck("valid", subscriber, token_row)


def confirm(db: sqlite_utils.Database, token: str, *, clock: Clock, how: str = "link") -> TokenCheck:
    """Use a confirmation token: the subscriber becomes confirmed. Returns the check made."""
    now = clock()
    with db.atomic():
        check = check_confirm_token(db, token, now=now)
        if check.state != "valid":
            return check
        confirm_subscriber(db, check.subscriber["id"], now=iso(now), how=how)
        check.subscriber = get_subscriber_by_id(db, check.subscriber["id"])
    return check


def confirm_subscriber(db, subscriber_id: int, *, now: str, how: str) -> None:
    db.execute(
        "UPDATE subscription_tokens SET used_at = ? WHERE subscriber_id = ? AND used_at IS NULL",
        [now, subscriber_id],
    )
    db.execute(
        "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, updated_at = ?, "
        "unsubscribed_at = NULL, hard_bounces = 0, note = ? WHERE id = ?",
        [now, now, f"confirmed by {how}", subscriber_id],
    )


def unsubscribe_by_token(db: sqlite_utils.Database, key: bytes, token: str, *, clock: Clock, how: str) -> tuple[dict | None, bool]:
    """Unsubscribe whoever an unsubscribe token names; returns (subscriber, changed)."""
    subscriber_id = subscriber_for_unsubscribe_token(key, token)
    if subscriber_id is None:
        return None, False
    with db.atomic():
        row = get_subscriber_by_id(db, subscriber_id)
        if row is None:
            return None, False
        changed = unsubscribe(db, subscriber_id, clock=clock, how=how)
    return get_subscriber_by_id(db, subscriber_id), changed


# --------------------------------------------------------------------------
# Import and export


@dataclass
class ImportReport:
    """What an import did, and one readable line per row it could not take."""

    added: int = 0
    reconfirmed: int = 0
    unchanged: int = 0
    confirmations: int = 0
    problems: list[str] = field(default_factory=list)


def import_rows(
    db: sqlite_utils.Database,
    handle: TextIO,
    *,
    confirmed: bool,
    clock: Clock,
    config: Config | None = None,
    templates: jinja2.Environment | None = None,
) -> ImportReport:
    """Import addresses from CSV text; bad rows are reported by line number, good rows go in.

    The address is taken from a column headed ``email`` (any case) if the
    first row has one, else from the first column. Without ``confirmed``
    every new address gets a confirmation (and needs ``config``/``templates``).
    """
    report = ImportReport()
    reader = csv.reader(handle)
    column = 0
    seen: dict[str, int] = {}
    first = True
    with db.atomic():
        for cells in reader:
            line = reader.line_num
            if first:
                first = False
                headings = [c.strip().casefold() for c in cells]
                if "email" in headings or "e-mail" in headings:
                    column = headings.index("email") if "email" in headings else headings.index("e-mail")
                    continue
            if not cells or not any(c.strip() for c in cells):
                continue
            value = cells[column] if column < len(cells) else ""
            try:
                email = normalize_email(value)
            except InvalidAddress as exc:
                report.problems.append(f"line {line}: {value.strip()!r}: {exc}")
                continue
            if email in seen:
                report.problems.append(f"line {line}: {email} is already on line {seen[email]}")
                continue
            seen[email] = line
            existing = get_subscriber(db, email)
            if confirmed:
                _, changed = add_confirmed(db, email, clock=clock, source="import")
                if not changed:
                    report.unchanged += 1
                elif existing is None:
                    report.added += 1
                else:
                    report.reconfirmed += 1
                continue
            assert config is not None and templates is not None
            result = request_subscription(
                db, email, config=config, templates=templates, clock=clock, source="import"
            )
            if existing is None:
                report.added += 1
            else:
                report.unchanged += 1
            if result.sent:
                report.confirmations += 1
    return report


EXPORT_COLUMNS = ("email", "status", "source", "created_at", "confirmed_at",
                  "unsubscribed_at", "hard_bounces", "note")


def export_rows(db: sqlite_utils.Database, handle: TextIO, *, status: str | None = None) -> int:
    """Write every subscriber as CSV (with a header row); returns how many rows."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for row in iter_subscribers(db, status=status):
        writer.writerow([row[c] if row[c] is not None else "" for c in EXPORT_COLUMNS])
        n += 1
    return n
