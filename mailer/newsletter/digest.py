"""The weekly "Enjoy Your Changes!" digest: composing it once, sending it exactly once each.

Composing. A digest lists the topics published since the previous digest was
composed (the first one: the last seven days). No new topics, no digest. The
message is rendered *once* into a frame: the complete message with three
markers where one subscriber's copy differs from the next (the address, the
subscriber id in the Message-ID, and the unsubscribe token). Each copy is
the frame with the markers replaced, so 100,000 copies cost one render and
100,000 byte joins, and every copy of a digest carries the same Date.

Archiving. Every copy is archived as an outbound ``digest`` message in the
subscriber's thread, but compactly: the frame is kept once in ``digests``,
and each message row keeps the SHA-256 and size of its exact bytes.
:func:`archived_bytes` rebuilds a copy byte for byte (and checks the hash).

Exactly once. ``digest_sends`` holds one row per digest and subscriber. A
worker sends MAIL, RCPT, DATA and the body, then commits the row as
``sending`` and only then sends the final ``.``; the relay's answer turns it
into ``sent``, ``failed`` or ``deferred``, and the copy's archive row is
written with that answer (a copy is deterministic, so a run killed before
archiving it leaves the next run enough to archive it). A run
killed at any point and started again skips every subscriber with a row
(``sending`` included: the relay may have the message) and sends to the
rest. The one window left is the few microseconds between that commit and
the ``.`` reaching the socket: a kill exactly there leaves a ``sending`` row
for a message the relay never got (reported as *uncertain*, never resent
automatically). See docs/digest.md.

Memory stays flat: subscribers are read in batches by id, a bounded queue
feeds ``digest.concurrency`` workers, each with one reused connection.

DKIM (issue 7). With ``[dkim]`` each copy is signed as it is made, with
``t=`` the digest's composition time, and its DKIM-Signature header is kept
in the copy's archive row, the one part the frame cannot rebuild
(docs/dkim.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Awaitable, Callable

import aiosmtplib
import jinja2
import sqlite_utils

from .archive import normalize_subject
from .clock import Clock, iso, parse_iso
from .compose import LOOP_HEADER, header_text, make_address, render
from .config import Config, DeliveryConfig
from .db import open_database
from .dkim import Signer, load_signer
from .delivery import (
    DeliveryFailure, MaildirTransport, PermanentFailure, TemporaryFailure, connect_relay, mail_parameters, mailbox_encoding,
    redact, relay_password,
)
from .tls import relay_context
from .subscribers import unsubscribe_mailto, unsubscribe_token, unsubscribe_url
from .topics import topics_published_since
from .writer import DatabaseWriter

log = logging.getLogger("mailer.digest")

#: With no previous digest, the first one lists what was published this long ago.
FIRST_DIGEST_LOOKBACK = dt.timedelta(days=7)
#: How long a run's claim on a digest lasts without being renewed.
LEASE = dt.timedelta(seconds=60)
#: SMTP forbids longer lines; templates are wrapped to stay well under it.
MAX_LINE = 998

# Long header values (the List-Unsubscribe URLs) must not be folded into
# RFC 2047 encoded words, which the 78-column default does to long tokens.
_FRAME_POLICY = policy.SMTP.clone(max_line_length=MAX_LINE)


class DigestError(Exception):
    """The digest cannot be composed or rebuilt; the message says why."""


class DigestBusy(DigestError):
    """Another run is sending this digest right now."""


class Skip(Exception):
    """The subscriber left between being read and being sent to."""


class Uncertain(Exception):
    """The end of the message went to the relay, but no answer came back."""


# --------------------------------------------------------------------------
# Composing


@dataclass(frozen=True)
class Markers:
    """The placeholders of a frame (random per digest, so no text can clash)."""

    rcpt: str
    subscriber: str
    token: str

    @classmethod
    def new(cls) -> "Markers":
        """Fresh markers; the token marker is exactly as long as a real token."""
        return cls(
            rcpt=f"r{secrets.token_hex(12)}@markers.invalid",
            subscriber=f"s{secrets.token_hex(12)}",
            token=f"t{secrets.token_hex(16)}"[:32],
        )

    def as_json(self) -> str:
        return json.dumps({"rcpt": self.rcpt, "subscriber": self.subscriber, "token": self.token})

    @classmethod
    def from_json(cls, text: str) -> "Markers":
        data = json.loads(text)
        return cls(rcpt=data["rcpt"], subscriber=data["subscriber"], token=data["token"])


class Frame:
    """A rendered digest with markers, and the fast way to make one copy of it."""

    def __init__(self, raw: bytes, markers: Markers) -> None:
        self.raw = raw
        self.markers = markers
        names = {m.encode("ascii"): key for key, m in
                 (("rcpt", markers.rcpt), ("subscriber", markers.subscriber), ("token", markers.token))}
        pattern = re.compile(b"(" + b"|".join(re.escape(m) for m in names) + b")")
        for marker, key in names.items():
            if marker not in raw:
                raise DigestError(f"the digest template lost the {key} placeholder")
        # Dot-stuffing (RFC 5321 4.5.2) is done once on the frame: no marker
        # and no value put in its place can start a line with a dot.
        stuffed = re.sub(rb"(?m)^\.", b"..", raw)
        self._raw_parts = [names.get(p, p) for p in pattern.split(raw)]
        self._wire_parts = [names.get(p, p) for p in pattern.split(stuffed)]
        self.eight_bit = not raw.isascii()

    def copy(self, email_address: str, subscriber_id: int, token: str) -> bytes:
        """The exact bytes one subscriber gets (and the archive keeps)."""
        return self._join(self._raw_parts, email_address, subscriber_id, token)

    def wire(self, email_address: str, subscriber_id: int, token: str) -> bytes:
        """The same copy as it goes on the wire inside DATA (dot-stuffed)."""
        return self._join(self._wire_parts, email_address, subscriber_id, token)

    @staticmethod
    def _join(parts, email_address: str, subscriber_id: int, token: str) -> bytes:
        values = {"rcpt": email_address.encode("utf-8"), "subscriber": str(subscriber_id).encode("ascii"),
                  "token": token.encode("ascii")}
        return b"".join(values.get(p, p) if isinstance(p, str) else p for p in parts)


def digest_subject(config: Config, topics: list[dict]) -> str:
    """The subject line: the masthead and how many pieces are new."""
    n = len(topics)
    return header_text(f"{config.column.name}! {n} new piece{'s' if n != 1 else ''} this week")


def compose_frame(
    config: Config,
    templates: jinja2.Environment,
    topics: list[dict],
    *,
    digest_id: int,
    created: dt.datetime,
    markers: Markers,
) -> bytes:
    """Render the digest once, with markers where each subscriber's copy differs."""
    domain = config.smtp.domain
    token = markers.token
    context = {
        "column": config.column,
        "topics": topics,
        "email": markers.rcpt,
        "unsubscribe_url": unsubscribe_url(config, token),
        "unsubscribe_address": config.addresses.unsubscribe,
        "letters_address": config.addresses.letters,
        "date": created.astimezone(config.column.zone).date(),
    }
    body = render(templates, "digest", context)
    msg = EmailMessage(policy=_FRAME_POLICY)
    msg["From"] = make_address(config.addresses.letters, config.column.name)
    msg["To"] = markers.rcpt
    msg["Subject"] = digest_subject(config, topics)
    msg["Date"] = email.utils.format_datetime(created.astimezone(dt.timezone.utc))
    msg["Message-ID"] = f"<digest.{digest_id}.{markers.subscriber}.{secrets.token_hex(4)}@{domain}>"
    msg["List-Id"] = header_text(f"{config.column.name} digest <digest.{domain}>")
    msg["List-Unsubscribe"] = f"<{unsubscribe_url(config, token)}>, <{unsubscribe_mailto(config, token)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    msg[LOOP_HEADER] = domain
    msg.set_content(body.text, cte=_cte(body.text, "text"))
    if body.html is not None:
        msg.add_alternative(body.html, subtype="html", cte=_cte(body.html, "HTML"))
    return msg.as_bytes()


def _cte(text: str, what: str) -> str:
    # 7bit/8bit keep the markers intact (quoted-printable could split them).
    longest = max((len(line.encode("utf-8")) for line in text.splitlines()), default=0)
    if longest > MAX_LINE - 2:
        raise DigestError(
            f"a line of the digest's {what} part is {longest} bytes long (SMTP allows {MAX_LINE}); "
            "wrap it in the template (e.g. with |wordwrap)"
        )
    return "7bit" if text.isascii() else "8bit"


# --------------------------------------------------------------------------
# The digests table


@dataclass
class Digest:
    """One digest as stored: its period, topics and frame."""

    id: int
    period: str
    status: str
    created_at: str
    since: str | None
    topics: list[dict]
    subject: str
    frame: Frame | None

    @classmethod
    def from_row(cls, row: dict) -> "Digest":
        frame = None
        if row["frame"] is not None:
            frame = Frame(bytes(row["frame"]), Markers.from_json(row["markers"]))
        return cls(row["id"], row["period"], row["status"], row["created_at"], row["since"],
                   json.loads(row["topics"]), row["subject"], frame)


def get_digest(db: sqlite_utils.Database, digest_id: int) -> Digest | None:
    """A digest by id, or None."""
    rows = list(db.query("SELECT * FROM digests WHERE id = ?", [digest_id]))
    return Digest.from_row(rows[0]) if rows else None


def list_digests(db: sqlite_utils.Database, *, limit: int = 20) -> list[dict]:
    """Digests, newest first: period, state, dates, topics listed, copies sent and not sent."""
    return list(db.query(
        "SELECT d.id, d.period, d.status, d.created_at, d.finished_at, json_array_length(d.topics) AS topics, "
        "(SELECT count(*) FROM digest_sends s WHERE s.digest_id = d.id AND s.status = 'sent') AS sent, "
        "(SELECT count(*) FROM digest_sends s WHERE s.digest_id = d.id AND s.status != 'sent') AS other "
        "FROM digests d ORDER BY d.id DESC LIMIT ?", [limit],
    ))


def previous_digest(db: sqlite_utils.Database) -> dict | None:
    """The latest digest that went (or is going) out; its creation is the next one's 'since'."""
    rows = list(db.query(
        "SELECT id, period, status, created_at FROM digests WHERE status IN ('sending', 'sent') "
        "ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    return rows[0] if rows else None


def unfinished_digests(db: sqlite_utils.Database) -> list[dict]:
    """Digests whose run has not finished (killed, or with deferred copies left)."""
    return list(db.query("SELECT id, period, created_at FROM digests WHERE status = 'sending' ORDER BY id"))


def new_topics(db: sqlite_utils.Database, *, now: dt.datetime) -> tuple[list[dict], str]:
    """The topics the next digest would list, and the moment they are counted from.

    Topics carry only a date, so "published since the previous digest" is
    read as: published on or after the previous digest's day and not listed
    in it. (A piece published on a Monday after the Monday digest went out
    belongs to the next one, not to none.)
    """
    previous = previous_digest(db)
    if previous is None:
        since = iso(now - FIRST_DIGEST_LOOKBACK)
        return topics_published_since(db, since), since
    since = previous["created_at"]
    day_before = (parse_iso(since).astimezone(dt.timezone.utc) - dt.timedelta(days=1)).date().isoformat()
    listed = {t["slug"] for t in json.loads(db.execute(
        "SELECT topics FROM digests WHERE id = ?", [previous["id"]]).fetchone()[0])}
    return [t for t in topics_published_since(db, day_before) if t["slug"] not in listed], since


@dataclass
class Opened:
    """What :func:`open_digest` found: a digest to send, or why there is none."""

    digest: Digest | None
    reason: str
    created: bool = False


def open_digest(
    db: sqlite_utils.Database,
    *,
    period: str | None,
    config: Config,
    templates: jinja2.Environment,
    clock: Clock,
    compose: bool = True,
) -> Opened:
    """Find or compose the digest for ``period`` (None: resume an unfinished one, else now).

    The period is the idempotency key: a period that already has a digest
    (sent, being sent, or found empty) never gets a second one. With
    ``compose=False`` only an unfinished digest is resumed.
    """
    now = clock()
    with db.atomic():
        if period is None:
            unfinished = unfinished_digests(db)
            if unfinished:
                digest = get_digest(db, unfinished[-1]["id"])
                return Opened(digest, f"resuming digest {digest.id} ({digest.period})")
            if not compose:
                return Opened(None, "no unfinished digest to resume")
            # A manual send is kept from repeating by "no new topics", not by its period.
            period = f"manual:{iso(now)}:{secrets.token_hex(3)}"
        rows = list(db.query("SELECT * FROM digests WHERE period = ?", [period]))
        if rows:
            digest = Digest.from_row(rows[0])
            if digest.status == "sending":
                return Opened(digest, f"resuming digest {digest.id} ({period})")
            if digest.status == "empty":
                return Opened(None, f"period {period} had no new topics; nothing to send")
            return Opened(None, f"digest {digest.id} for period {period} was already sent")
        topics, since = new_topics(db, now=now)
        if not topics:
            if not period.startswith("manual:"):
                db.execute(
                    "INSERT INTO digests (period, status, created_at, since) VALUES (?, 'empty', ?, ?)",
                    [period, iso(now), since],
                )
            return Opened(None, f"no new topics since {since}: no digest")
        cursor = db.execute(
            "INSERT INTO digests (period, status, created_at, since, topics, subject) "
            "VALUES (?, 'sending', ?, ?, ?, ?)",
            [period, iso(now), since, json.dumps(topics, ensure_ascii=False), digest_subject(config, topics)],
        )
        digest_id = cursor.lastrowid
        markers = Markers.new()
        frame = compose_frame(config, templates, topics, digest_id=digest_id, created=now, markers=markers)
        db.execute("UPDATE digests SET frame = ?, markers = ? WHERE id = ?", [frame, markers.as_json(), digest_id])
        return Opened(get_digest(db, digest_id), f"composed digest {digest_id} with {len(topics)} topics", True)


@dataclass
class Preview:
    """The next digest as a sample subscriber would get it."""

    subject: str
    text: str
    html: str | None
    topics: list[dict]
    since: str


def preview(db: sqlite_utils.Database, *, config: Config, templates: jinja2.Environment,
            clock: Clock, key: bytes) -> Preview | str:
    """Render the next digest without recording anything; a str says why there is none."""
    now = clock()
    topics, since = new_topics(db, now=now)
    if not topics:
        return f"no new topics since {since}: no digest would be sent"
    markers = Markers.new()
    frame = Frame(compose_frame(config, templates, topics, digest_id=0, created=now, markers=markers), markers)
    raw = frame.copy("reader@example.org", 0, unsubscribe_token(key, 0))
    msg = email.message_from_bytes(raw, policy=policy.default)
    html = msg.get_body(("html",))
    return Preview(
        subject=str(msg["Subject"]), text=msg.get_body(("plain",)).get_content(),
        html=html.get_content() if html is not None else None, topics=topics, since=since,
    )


def archived_bytes(db: sqlite_utils.Database, message_id: int, key: bytes) -> bytes:
    """The exact bytes of an archived digest copy, rebuilt from its frame and checked."""
    rows = list(db.query("SELECT kind, rcpt_to, meta, raw_sha256 FROM messages WHERE id = ?", [message_id]))
    if not rows or rows[0]["kind"] != "digest":
        raise KeyError(message_id)
    row = rows[0]
    meta = json.loads(row["meta"])
    digest = get_digest(db, meta["digest"])
    if digest is None or digest.frame is None:
        raise DigestError(f"message {message_id}: its digest {meta['digest']} is missing from the archive")
    subscriber_id = meta["subscriber"]
    raw = digest.frame.copy(json.loads(row["rcpt_to"])[0], subscriber_id, unsubscribe_token(key, subscriber_id))
    # Issue 7: the copy's DKIM-Signature is kept with its row (it differs per
    # copy, and the key that made it may have been replaced since).
    raw = meta.get("dkim", "").encode("ascii") + raw
    if hashlib.sha256(raw).hexdigest() != row["raw_sha256"]:
        raise DigestError(
            f"message {message_id}: the rebuilt copy does not match what was sent "
            "(was subscribers.token_key_file replaced?)"
        )
    return raw


# --------------------------------------------------------------------------
# Leases: one run per digest at a time


def _claim(db: sqlite_utils.Database, digest_id: int, runner: str, now: dt.datetime) -> None:
    row = db.execute("SELECT runner, lease_until FROM digests WHERE id = ?", [digest_id]).fetchone()
    holder, until = row if row else (None, None)
    if holder and holder != runner and until and parse_iso(until) > now and _alive(holder):
        raise DigestBusy(f"digest {digest_id} is being sent by {holder} (until {until})")
    db.execute("UPDATE digests SET runner = ?, lease_until = ? WHERE id = ?",
               [runner, iso(now + LEASE), digest_id])


def _release(db: sqlite_utils.Database, digest_id: int, runner: str) -> None:
    db.execute("UPDATE digests SET runner = NULL, lease_until = NULL WHERE id = ? AND runner = ?",
               [digest_id, runner])


def _alive(runner: str) -> bool:
    """Whether a runner (host:pid) may still be running; a dead local process is not."""
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------
# The send log


def _checkpoint(db, digest_id: int, subscriber_id: int, now: str) -> bool:
    """Just before the end of DATA: log the copy 'sending' (False: the subscriber left).

    This is the one commit a copy waits for, so it is two small statements;
    the archive row follows with the relay's answer (:func:`_archive_copies`).
    """
    row = db.execute("SELECT status FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    if row is None or row[0] != "confirmed":
        return False
    db.execute(
        "INSERT INTO digest_sends (digest_id, subscriber_id, status, attempts, updated_at) "
        "VALUES (?, ?, 'sending', 1, ?) ON CONFLICT (digest_id, subscriber_id) DO UPDATE SET "
        "status = 'sending', attempts = attempts + 1, updated_at = excluded.updated_at",
        [digest_id, subscriber_id, now],
    )
    return True


def _archive_copies(db, digest_id: int, archive: dict, copies: list[tuple[int, str, int, str, bytes]],
                    now: str) -> None:
    """Archive copies the relay took (or may have): (subscriber id, address, size, sha256, DKIM-Signature) each.

    The signature header (b"" when not signing) is kept in the row's meta: it
    is the one part of a copy the frame cannot rebuild.

    A copy is rebuilt exactly from its digest's frame, so its archive row can
    follow the send; a copy logged 'sending' by a run that was killed before
    archiving it is archived by the next run (:meth:`DigestRun._backfill`).
    """
    for subscriber_id, address, size, sha256, signature in copies:
        found = db.execute(
            "SELECT d.message_id, s.thread_id FROM digest_sends d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.digest_id = ? AND d.subscriber_id = ?", [digest_id, subscriber_id],
        ).fetchone()
        if found is None or found[0] is not None:
            continue  # archived already (a copy is archived once, however often it was tried)
        thread_id = found[1]
        if thread_id is None:
            thread_id = db.execute(
                "INSERT INTO threads (subject, subject_key, correspondent, status, urgent, created_at, "
                "last_message_at, message_count) VALUES (?, ?, ?, 'archived', 0, ?, ?, 0)",
                [archive["subject"], normalize_subject(archive["subject"]), address, now, now],
            ).lastrowid
            db.execute("UPDATE subscribers SET thread_id = ? WHERE id = ?", [thread_id, subscriber_id])
        message_id = db.execute(
            "INSERT INTO messages (thread_id, direction, kind, created_at, correspondent, mail_from, rcpt_to, "
            "message_id, from_addr, from_name, to_addrs, subject, date, auto_submitted, list_id, precedence, "
            "body_text, size, raw_sha256, processed_at, disposition, meta) "
            "VALUES (?, 'outbound', 'digest', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'auto-generated', ?, 'bulk', ?, ?, ?, ?, ?, ?)",
            [thread_id, now, address, archive["mail_from"], json.dumps([address]),
             archive["message_id"].replace(archive["marker"], str(subscriber_id)),
             archive["from_addr"], archive["from_name"], json.dumps([address]), archive["subject"],
             archive["date"], archive["list_id"], archive["body_text"], size, sha256,
             now, "digest copy (compact: rebuilt from its frame)",
             json.dumps({"digest": digest_id, "subscriber": subscriber_id, "compact": True,
                         **({"dkim": signature.decode("ascii")} if signature else {})})],
        ).lastrowid
        db.execute(
            "UPDATE threads SET message_count = message_count + 1, last_message_at = max(last_message_at, ?) "
            "WHERE id = ?", [now, thread_id],
        )
        db.execute("UPDATE digest_sends SET message_id = ? WHERE digest_id = ? AND subscriber_id = ?",
                   [message_id, digest_id, subscriber_id])


_RECORD = (
    "INSERT INTO digest_sends (digest_id, subscriber_id, status, attempts, response, updated_at) "
    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (digest_id, subscriber_id) DO UPDATE SET "
    "status = excluded.status, response = excluded.response, updated_at = excluded.updated_at, "
    "attempts = attempts + {}"
)


def _record(db, digest_id: int, subscriber_id: int, status: str, response: str, now: str, attempted: bool) -> None:
    """The relay's answer (or our reason) for one copy."""
    db.execute(_RECORD.format(1 if attempted else 0), [digest_id, subscriber_id, status, response[:500], now])


def _record_many(db, answers: list[tuple], digest_id: int, archive: dict, copies: list[tuple], now: str) -> None:
    """Several relays' answers at once, and the archive rows of the copies they took."""
    db.conn.executemany(_RECORD.format(0), answers)
    _archive_copies(db, digest_id, archive, copies, now)


def _finish(db, digest_id: int, now: str) -> bool:
    """Mark the digest sent if nobody is left to send to; True if it was."""
    left = db.execute(
        "SELECT 1 FROM subscribers s WHERE s.status = 'confirmed' AND NOT EXISTS ("
        "SELECT 1 FROM digest_sends d WHERE d.digest_id = ? AND d.subscriber_id = s.id AND d.status != 'deferred') "
        "LIMIT 1", [digest_id],
    ).fetchone()
    if left:
        return False
    db.execute("UPDATE digests SET status = 'sent', finished_at = ? WHERE id = ? AND status = 'sending'",
               [now, digest_id])
    return True


class SendLogWriter(DatabaseWriter):
    """The run's own writer: group commits with ``synchronous=NORMAL``.

    In WAL mode a NORMAL commit is in the operating system's hands when it
    returns, so it survives the process being killed (what the send log must
    survive); only a power cut can lose the last few. That is the price of
    not waiting for an fsync before every message's final dot.
    """

    _tuned: int | None = None

    def _connection(self):
        db = super()._connection()
        if self._tuned != id(db):
            db.execute("PRAGMA synchronous = NORMAL")
            self._tuned = id(db)
        return db


# --------------------------------------------------------------------------
# Transports for digests: a checkpoint before the final dot


Checkpoint = Callable[[], Awaitable[None]]


class SmtpDigestSession:
    """One reused relay connection that lets the send log commit before the final dot."""

    def __init__(self, config: DeliveryConfig, password: str | None, tls_context=None) -> None:
        self.config = config
        self.password = password
        self.tls_context = tls_context
        self._client: aiosmtplib.SMTP | None = None

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        # TLS, certificate checks, login-only-over-TLS (issue 7) and EHLO are delivery.py's.
        try:
            client = await connect_relay(self.config, self.tls_context, self.password)
        except DeliveryFailure as exc:
            raise redact(exc, self.config.username, self.password) from None
        self._client = client
        return client

    def _drop(self) -> None:
        # Closing the connection mid-DATA makes the relay discard the message.
        if self._client is not None:
            self._client.close()
        self._client = None

    async def send(self, copy: "Copy", mail_from: str, rcpt: str, checkpoint: Checkpoint) -> str:
        """Deliver one copy; raise TemporaryFailure/PermanentFailure, Skip or Uncertain."""
        wire, eight_bit = copy.wire, copy.eight_bit
        client = await self._connected()
        try:
            options = mail_parameters(client, eight_bit=eight_bit, addresses=[mail_from, rcpt])
            await client.mail(mail_from, options=options, encoding=mailbox_encoding(options))
            await client.rcpt(rcpt, encoding=mailbox_encoding(options))
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise aiosmtplib.SMTPResponseException(start.code, start.message)
        except aiosmtplib.SMTPResponseException as exc:
            try:
                await client.rset()
            except Exception:  # noqa: BLE001 - a connection that cannot reset is dropped
                self._drop()
            raise _classify(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            self._drop()
            raise TemporaryFailure(f"relay connection failed: {exc}") from None
        protocol = client.protocol
        try:
            # aiosmtplib's data() sends body and dot in one write; we need the
            # send log committed between the two, so DATA is spoken by hand.
            protocol.write(wire)
            await checkpoint()
        except BaseException as exc:
            self._drop()
            if isinstance(exc, (aiosmtplib.SMTPException, OSError)):
                raise TemporaryFailure(f"relay connection failed: {exc}") from None
            raise
        try:
            protocol.write(b".\r\n")
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TemporaryFailure(f"relay connection failed before the end of the message: {exc}") from None
        try:
            answer = await protocol.read_response(timeout=self.config.timeout)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            self._drop()
            raise Uncertain(f"no answer after the end of the message: {exc}") from None
        if answer.code != 250:
            raise _classify(answer.code, answer.message)
        return f"{answer.code} {answer.message}"

    async def close(self) -> None:
        """Say QUIT."""
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.quit()
            except Exception:  # noqa: BLE001
                self._client.close()
        self._client = None


class MaildirDigestSession:
    """Digests into the Maildir (``delivery.mode = "maildir"``); one file per copy."""

    def __init__(self, transport: MaildirTransport) -> None:
        self.transport = transport

    async def send(self, copy: "Copy", mail_from: str, rcpt: str, checkpoint: Checkpoint) -> str:
        """Log, then write the file (named by the copy's key, so a repeat overwrites nothing)."""
        await checkpoint()
        return await self.transport.deliver(copy.raw, mail_from, [rcpt], copy.key)

    async def close(self) -> None:
        """Nothing to release."""


class DigestTransport:
    """Makes one session per worker and, where it can, says whether a copy arrived."""

    def __init__(self, config: DeliveryConfig, environ=None) -> None:
        environ = os.environ if environ is None else environ
        self.config = config
        smtp = config.mode == "smtp"
        # Issue 7: a missing password or CA file is a ConfigError here, before any copy is sent.
        self.password = relay_password(config, environ) if smtp else None
        self.tls_context = relay_context(config) if smtp else None
        self.maildir = MaildirTransport(config.maildir) if config.mode == "maildir" else None

    def session(self):
        """A session for one worker."""
        if self.maildir is not None:
            return MaildirDigestSession(self.maildir)
        return SmtpDigestSession(self.config, self.password, self.tls_context)

    def delivered(self, key: str) -> bool | None:
        """True/False if this transport can tell whether a copy arrived, else None (a relay cannot)."""
        if self.maildir is None:
            return None
        name = f"{key}.{self.maildir.hostname}"
        return (self.maildir.path / "new" / name).exists() or any((self.maildir.path / "cur").glob(f"{name}*"))


@dataclass(frozen=True)
class Copy:
    """One subscriber's copy: archived bytes, the same dot-stuffed for DATA, and its name."""

    raw: bytes
    wire: bytes
    eight_bit: bool
    key: str


def _classify(code: int, message: str) -> TemporaryFailure | PermanentFailure:
    text = f"{code} {message}"
    return PermanentFailure(text) if 500 <= code < 600 else TemporaryFailure(text)


def delivery_key(digest_id: int, subscriber_id: int) -> str:
    """The copy's name where a transport needs one (a Maildir file)."""
    return f"digest.{digest_id}.{subscriber_id}"


# --------------------------------------------------------------------------
# Sending


@dataclass
class Summary:
    """What a run did. ``skipped`` counts copies not sent this run because they were
    already done by an earlier run, or the subscriber left during the run."""

    digest_id: int | None = None
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    uncertain: int = 0
    finished: bool = False
    reason: str = ""
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the log and the terminal."""
        extra = ""
        if self.deferred:
            extra += f", deferred {self.deferred} (retried by the next run)"
        if self.uncertain:
            extra += f", uncertain {self.uncertain} (the relay may have them; not resent)"
        return f"sent {self.sent}, failed {self.failed}, skipped {self.skipped}{extra}"


Progress = Callable[[str, int], None]


class _Pacer:
    """At most ``rate`` starts per second across all workers (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.gap:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self.next)
        self.next = start + self.gap
        if start > now:
            await asyncio.sleep(start - now)  # pacing outgoing mail, not waiting for work


class DigestRun:
    """Sends one digest to every confirmed subscriber who has not had it."""

    def __init__(
        self,
        digest: Digest,
        *,
        config: Config,
        writer: DatabaseWriter,
        reader: sqlite_utils.Database,
        transport: DigestTransport,
        key: bytes,
        clock: Clock,
        progress: Progress | None = None,
        stopping: asyncio.Event | None = None,
        signer: Signer | None = None,
    ) -> None:
        assert digest.frame is not None
        self.stopping = stopping or asyncio.Event()
        # Issue 7: each copy is DKIM-signed with t= the digest's composition
        # time, so a copy signed again (see _backfill) is the same bytes.
        self.signer = signer
        self._signed_at = parse_iso(digest.created_at)
        self.digest = digest
        self.frame = digest.frame
        self.config = config
        self.writer = writer
        self.reader = reader
        self.transport = transport
        self.key = key
        self.clock = clock
        self.progress = progress or (lambda event, n: None)
        self.summary = Summary(digest_id=digest.id)
        self._pending: set[asyncio.Future] = set()
        self._answers: list[tuple] = []
        self._copies: list[tuple] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pacer = _Pacer(config.digest.rate_limit)
        message = email.message_from_bytes(self.frame.raw, policy=policy.default)
        self._archive = {
            "mail_from": config.addresses.bounces,
            "from_addr": config.addresses.letters,
            "from_name": config.column.name,
            "subject": digest.subject,
            "date": email.utils.parsedate_to_datetime(message["Date"]).isoformat(),
            "list_id": str(message["List-Id"]),
            # Kept short: it is indexed for search once per copy. The copy itself
            # is rebuilt from the frame (`mailer digest raw`).
            "body_text": f"Digest {digest.id}: {len(digest.topics)} new pieces (the copy: mailer digest raw)",
            "message_id": str(message["Message-ID"]),
            "marker": self.frame.markers.subscriber,
        }

    def count_remaining(self) -> int:
        """Subscribers this run still has to send to (for the progress bar)."""
        return self.reader.execute(
            "SELECT count(*) FROM subscribers s WHERE s.status = 'confirmed' AND NOT EXISTS ("
            "SELECT 1 FROM digest_sends d WHERE d.digest_id = ? AND d.subscriber_id = s.id "
            "AND d.status != 'deferred')", [self.digest.id],
        ).fetchone()[0]

    def count_done_before(self) -> int:
        """Copies an earlier run already settled (they are skipped)."""
        return self.reader.execute(
            "SELECT count(*) FROM digest_sends WHERE digest_id = ? AND status IN ('sent', 'sending', 'failed')",
            [self.digest.id],
        ).fetchone()[0]

    async def run(self) -> Summary:
        """Resolve what an earlier run left uncertain, send, retry deferred copies, finish."""
        self.summary.skipped = self.count_done_before()
        await self._resolve_uncertain()
        await self._backfill()
        for attempt in range(1 + self.config.digest.retry_passes):
            if attempt:
                if self.stopping.is_set() or not self._has_deferred():
                    break
                await asyncio.sleep(self.config.delivery.retry_base_seconds * attempt)  # backoff between passes
                self.summary.deferred = 0
            await self._pass()
        await self._settle()
        self.summary.finished = await self.writer.run(_finish, self.digest.id, iso(self.clock()))
        return self.summary

    def _has_deferred(self) -> bool:
        return bool(self.reader.execute(
            "SELECT 1 FROM digest_sends WHERE digest_id = ? AND status = 'deferred' LIMIT 1", [self.digest.id]
        ).fetchone())

    async def _resolve_uncertain(self) -> None:
        """Ask the transport about copies an earlier run left 'sending' (a Maildir can tell)."""
        rows = self.reader.execute(
            "SELECT subscriber_id FROM digest_sends WHERE digest_id = ? AND status = 'sending'", [self.digest.id]
        ).fetchall()
        for (subscriber_id,) in rows:
            arrived = self.transport.delivered(delivery_key(self.digest.id, subscriber_id))
            if arrived is None:
                self.summary.uncertain += 1
                self.summary.skipped -= 1  # counted as uncertain, not as skipped
                log.warning("digest %d, subscriber %d: an earlier run was stopped while handing it over; "
                            "the relay may have it, so it is not sent again", self.digest.id, subscriber_id)
                continue
            status = "sent" if arrived else "deferred"
            await self.writer.run(_record, self.digest.id, subscriber_id, status,
                                  "checked after a restart: " + ("in the Maildir" if arrived else "not delivered"),
                                  iso(self.clock()), False)
            if not arrived:
                self.summary.skipped -= 1

    async def _backfill(self) -> None:
        """Archive copies an earlier run logged but was killed before archiving."""
        while True:
            rows = self.reader.execute(
                "SELECT s.id, s.email FROM digest_sends d JOIN subscribers s ON s.id = d.subscriber_id "
                "WHERE d.digest_id = ? AND d.status IN ('sending', 'sent') AND d.message_id IS NULL LIMIT 500",
                [self.digest.id],
            ).fetchall()
            if not rows:
                return
            copies = []
            for subscriber_id, address in rows:
                raw, _, signature = self._copy(subscriber_id, address)
                copies.append((subscriber_id, address, len(raw), hashlib.sha256(raw).hexdigest(), signature))
            await self.writer.run(_archive_copies, self.digest.id, self._archive, copies, iso(self.clock()))

    async def _pass(self) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.config.digest.batch_size)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.digest.concurrency)]
        try:
            last_id = 0
            while not self.stopping.is_set():
                batch = self._batch(last_id)
                if not batch:
                    break
                for subscriber in batch:
                    if self.stopping.is_set():
                        break
                    await queue.put(subscriber)
                last_id = batch[-1][0]
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)

    def _batch(self, after_id: int) -> list[tuple[int, str]]:
        return self.reader.execute(
            "SELECT s.id, s.email FROM subscribers s WHERE s.status = 'confirmed' AND s.id > ? "
            "AND NOT EXISTS (SELECT 1 FROM digest_sends d WHERE d.digest_id = ? AND d.subscriber_id = s.id "
            "AND d.status != 'deferred') ORDER BY s.id LIMIT ?",
            [after_id, self.digest.id, self.config.digest.batch_size],
        ).fetchall()

    async def _worker(self, queue: asyncio.Queue) -> None:
        session = self.transport.session()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if self.stopping.is_set():
                    continue  # drain without sending: a stop finishes only what is in hand
                await self._pacer.wait()
                await self._send_one(session, *item)
        finally:
            await session.close()

    async def _send_one(self, session, subscriber_id: int, address: str) -> None:
        digest_id = self.digest.id
        if self.signer is None:
            raw, wire, signature = self._copy(subscriber_id, address)
        else:
            # In a thread: the RSA step releases the GIL, so signing one copy
            # overlaps with the other workers' SMTP (docs/dkim.md has the figures).
            raw, wire, signature = await asyncio.get_running_loop().run_in_executor(
                None, self._copy, subscriber_id, address)
        async def checkpoint() -> None:
            if not await self.writer.run(_checkpoint, digest_id, subscriber_id, iso(self.clock())):
                raise Skip()

        copy = Copy(raw, wire, self.frame.eight_bit, delivery_key(digest_id, subscriber_id))
        try:
            answer = await session.send(copy, self.config.addresses.bounces, address, checkpoint)
        except Skip:
            self.summary.skipped += 1
            self.progress("skipped", 1)
            return
        except PermanentFailure as exc:
            self._log(subscriber_id, "failed", str(exc))
            self.summary.failed += 1
            if len(self.summary.failures) < 100:
                self.summary.failures.append(f"{address}: {exc}")
            self.progress("failed", 1)
            return
        except TemporaryFailure as exc:
            self._log(subscriber_id, "deferred", str(exc))
            self.summary.deferred += 1
            self.progress("deferred", 1)
            return
        except Uncertain as exc:
            log.warning("digest %d to %s: %s; not resent", digest_id, address, exc)
            self._archive_later(subscriber_id, address, raw, signature)  # the relay may have it
            self.summary.uncertain += 1
            self.progress("uncertain", 1)
            return
        self._archive_later(subscriber_id, address, raw, signature)
        self._log(subscriber_id, "sent", answer)
        self.summary.sent += 1
        self.progress("sent", 1)

    def _log(self, subscriber_id: int, status: str, response: str) -> None:
        # Not awaited, and written in small batches: whatever the crash, a copy
        # whose row still says 'sending' is never sent again, so the answer
        # may ride a later commit.
        self._answers.append((self.digest.id, subscriber_id, status, response[:500], iso(self.clock())))
        self._flush_soon()

    def _copy(self, subscriber_id: int, address: str) -> tuple[bytes, bytes, bytes]:
        """One subscriber's copy: its bytes, the same dot-stuffed for DATA, and its DKIM-Signature (or b"")."""
        token = unsubscribe_token(self.key, subscriber_id)
        raw = self.frame.copy(address, subscriber_id, token)
        wire = self.frame.wire(address, subscriber_id, token)
        if self.signer is None:
            return raw, wire, b""
        # The signature never starts a line with a dot, so it goes before the stuffed copy as it is.
        signature = self.signer.signature(raw, at=self._signed_at)
        return signature + raw, signature + wire, signature

    def _archive_later(self, subscriber_id: int, address: str, raw: bytes, signature: bytes) -> None:
        self._copies.append((subscriber_id, address, len(raw), hashlib.sha256(raw).hexdigest(), signature))
        self._flush_soon()

    def _flush_soon(self) -> None:
        if len(self._answers) + len(self._copies) >= 256:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(0.05, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._answers and not self._copies:
            return
        answers, self._answers = self._answers, []
        copies, self._copies = self._copies, []
        future = asyncio.wrap_future(self.writer.submit(
            _record_many, answers, self.digest.id, self._archive, copies, iso(self.clock())))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _settle(self) -> None:
        self._flush()
        if self._pending:
            await asyncio.gather(*list(self._pending))


async def run_digest(
    config: Config,
    *,
    period: str | None = None,
    clock: Clock,
    key: bytes,
    templates: jinja2.Environment | None = None,
    transport: DigestTransport | None = None,
    progress: Progress | None = None,
    on_start: Callable[[Digest, int], None] | None = None,
    compose: bool = True,
    stopping: asyncio.Event | None = None,
    signer: Signer | None = None,
) -> Summary:
    """Compose (or resume) and send the digest for ``period``; the whole of ``digest send``.

    ``signer``: the DKIM signer already loaded (``mailer serve`` has one);
    None reads ``[dkim]`` here, before anything is composed or sent.
    """
    from .templating import template_environment

    if signer is None:
        signer = load_signer(config, clock=clock)  # a bad key stops the run before it starts (ConfigError)

    templates = templates or template_environment(config.templates_override())
    transport = transport or DigestTransport(config.delivery)
    writer = SendLogWriter(config.storage.database)
    writer.start()
    reader = open_database(config.storage.database, migrate=False)
    runner = f"{socket.gethostname()}:{os.getpid()}"
    try:
        opened = await writer.run(
            lambda db: open_digest(db, period=period, config=config, templates=templates, clock=clock, compose=compose))
        if opened.digest is None:
            log.info("%s", opened.reason, extra={"event": "digest_none", "period": period})
            return Summary(reason=opened.reason, finished=True)
        digest = opened.digest
        log.info("%s", opened.reason)
        await writer.run(_claim, digest.id, runner, clock())
        run = DigestRun(digest, config=config, writer=writer, reader=reader, transport=transport,
                        key=key, clock=clock, progress=progress, stopping=stopping, signer=signer)
        renew = asyncio.create_task(_renew(writer, digest.id, runner, clock))
        try:
            if on_start is not None:
                on_start(digest, run.count_remaining())
            summary = await run.run()
        finally:
            renew.cancel()
            await writer.run(_release, digest.id, runner)
        summary.reason = opened.reason
        log.info("digest %d (%s): %s%s", digest.id, digest.period, summary.line(),
                 "" if summary.finished else " - not finished",
                 extra={"event": "digest_run", "digest_id": digest.id, "period": digest.period,
                        "sent": summary.sent, "failed": summary.failed, "skipped": summary.skipped,
                        "deferred": summary.deferred, "uncertain": summary.uncertain,
                        "finished": summary.finished})
        return summary
    finally:
        reader.close()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)


async def _renew(writer: DatabaseWriter, digest_id: int, runner: str, clock: Clock) -> None:
    while True:
        await asyncio.sleep(LEASE.total_seconds() / 3)  # keep the claim fresh while sending
        try:
            await writer.run(_claim, digest_id, runner, clock())
        except Exception:  # noqa: BLE001 - a missed renewal is retried; the run goes on
            log.exception("could not renew the claim on digest %d", digest_id)
