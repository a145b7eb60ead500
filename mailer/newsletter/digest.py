"""The weekly "Enjoy Your Changes!" digest: composing it once.

Composing. A digest lists the topics published since the previous digest was
composed (the first one: the last seven days). No new topics, no digest. The
message is rendered *once* into a frame: the complete message with three
markers where one subscriber's copy differs from the next (the address, the
subscriber's id and secret tag in the Message-ID, and the unsubscribe token). Each copy is
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

DKIM. With ``[dkim]`` each copy is signed as it is made, with
``t=`` the digest's composition time, and its DKIM-Signature header is kept
in the copy's archive row, the one part the frame cannot rebuild
(docs/dkim.md).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage

import jinja2
import sqlite_utils

from mailer.clock import Clock, iso, parse_iso
from mailer.config import Config
from mailer.newsletter.subscribers import (
    unsubscribe_mailto,
    unsubscribe_token,
    unsubscribe_url,
)
from mailer.outbound.compose import LOOP_HEADER, header_text, make_address, render
from mailer.topics import topics_published_since

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

    def _join(self, parts, email_address: str, subscriber_id: int, token: str) -> bytes:
        values = {"rcpt": email_address.encode("utf-8"),
                  "subscriber": copy_tag(self.markers, subscriber_id, token).encode("ascii"),
                  "token": token.encode("ascii")}
        return b"".join(values.get(p, p) if isinstance(p, str) else p for p in parts)


def copy_tag(markers: Markers, subscriber_id: int, token: str) -> str:
    """What stands for the subscriber in a copy's Message-ID: their id and a secret tag.

    A reader who knows their own Message-ID must not be able to name anyone
    else's copy (a letter "in reply to" it would otherwise join that
    reader's thread). The tag is an HMAC keyed by the subscriber's
    unsubscribe token (itself an HMAC under the column's token key) over
    this digest's random marker: unguessable, different in every copy, and
    the same every time the copy is made, so a resend after a crash and
    :func:`archived_bytes` give the same bytes.
    """
    mac = hmac.new(token.encode("ascii"), b"mailer-digest-copy:" + markers.subscriber.encode("ascii"),
                   hashlib.sha256).hexdigest()[:24]
    return f"{subscriber_id}.{mac}"


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


def published_digests(db: sqlite_utils.Database, *, limit: int = 100) -> list[dict]:
    """Digests that went out (or are going out), newest first, for the public archive.

    Only what every subscriber's copy shares: number, date, subject, topics.
    Never the frame, whose markers are replaced by a subscriber's address and token.
    """
    rows = db.query(
        "SELECT id, created_at, subject, topics FROM digests WHERE status IN ('sending', 'sent') "
        "ORDER BY id DESC LIMIT ?", [limit])
    return [{**row, "topics": json.loads(row["topics"])} for row in rows]


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


def new_topics(db: sqlite_utils.Database, *, now: dt.datetime, since: str | None = None) -> tuple[list[dict], str]:
    """The topics the next digest would list, and the moment they are counted from.

    Topics carry only a date, so "published since the previous digest" is
    read as: published on or after the previous digest's day and not listed
    in it. (A piece published on a Monday after the Monday digest went out
    belongs to the next one, not to none.) ``since`` (an ISO date, from
    ``--since``) overrides that: topics published on or after that day.
    """
    if since is not None:
        day_before = (dt.date.fromisoformat(since) - dt.timedelta(days=1)).isoformat()
        return topics_published_since(db, day_before), since
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


def no_topics_reason(db: sqlite_utils.Database, since: str) -> str:
    """Why there is no digest, and what to do: import new pieces, or start earlier with --since."""
    newest = db.execute("SELECT max(published) FROM topics").fetchone()[0]
    day = since[:10]
    if newest is None:
        return (f"no topics published since {day}: the archive has no topics at all; import some "
                "(`mailer topics import examples/topics.toml`, or set [topics] feed_url)")
    return (f"no topics published since {day} (the newest is from {newest}); import new ones "
            f"(`mailer topics import PATH_OR_URL`, `mailer topics refresh`) or use --since DATE "
            f"(e.g. --since {newest})")


def open_digest(
    db: sqlite_utils.Database,
    *,
    period: str | None,
    config: Config,
    templates: jinja2.Environment,
    clock: Clock,
    compose: bool = True,
    since: str | None = None,
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
        topics, since = new_topics(db, now=now, since=since)
        if not topics:
            if not period.startswith("manual:"):
                db.execute(
                    "INSERT INTO digests (period, status, created_at, since) VALUES (?, 'empty', ?, ?)",
                    [period, iso(now), since],
                )
            return Opened(None, f"{no_topics_reason(db, since)}: no digest")
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
    raw: bytes = b""


#: Who a preview is addressed to when no subscriber is named (its unsubscribe link leads nowhere).
SAMPLE_READER = "reader@example.org"


def preview(db: sqlite_utils.Database, *, config: Config, templates: jinja2.Environment,
            clock: Clock, key: bytes, since: str | None = None, to: dict | None = None) -> Preview | str:
    """Render the next digest without recording anything; a str says why there is none.

    ``to`` (a subscriber row) renders that subscriber's own copy, with their
    working unsubscribe link; without it the copy is a sample reader's.
    """
    raw = render_copy(db, config=config, templates=templates, clock=clock, key=key, since=since, to=to)
    if isinstance(raw, str):
        return raw
    raw, topics, since = raw
    msg = email.message_from_bytes(raw, policy=policy.default)
    html = msg.get_body(("html",))
    return Preview(
        subject=str(msg["Subject"]), text=msg.get_body(("plain",)).get_content(),
        html=html.get_content() if html is not None else None, topics=topics, since=since, raw=raw,
    )


def render_copy(db: sqlite_utils.Database, *, config: Config, templates: jinja2.Environment, clock: Clock,
                key: bytes, since: str | None = None, to: dict | None = None,
                email_address: str | None = None) -> tuple[bytes, list[dict], str] | str:
    """One copy of the next digest (bytes, topics, since), recording nothing; a str says why there is none."""
    now = clock()
    topics, since = new_topics(db, now=now, since=since)
    if not topics:
        return f"{no_topics_reason(db, since)}: no digest would be sent"
    markers = Markers.new()
    frame = Frame(compose_frame(config, templates, topics, digest_id=0, created=now, markers=markers), markers)
    subscriber_id = to["id"] if to else 0
    address = email_address or (to["email"] if to else SAMPLE_READER)
    return frame.copy(address, subscriber_id, unsubscribe_token(key, subscriber_id)), topics, since


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
    # The copy's DKIM-Signature is kept with its row (it differs per
    # copy, and the key that made it may have been replaced since).
    raw = meta.get("dkim", "").encode("ascii") + raw
    if hashlib.sha256(raw).hexdigest() != row["raw_sha256"]:
        raise DigestError(
            f"message {message_id}: the rebuilt copy does not match what was sent "
            "(was subscribers.token_key_file replaced?)"
        )
    return raw
