"""The SMTP listener: takes letters for the column's own addresses, refuses the rest.

Built on aiosmtpd with ``decode_data=False``: the bytes a reader's server sent
are the bytes we archive. The rules, in the order a session meets them:

* more than ``smtp.max_connections`` open sessions, or more than
  ``smtp.max_connections_per_client`` from one address: 421 4.7.0, try later;
* DATA slower than ``smtp.min_data_rate`` on average (after the first
  ``smtp.idle_timeout`` seconds): 421 4.4.2 and the session ends, so a client
  trickling bytes cannot hold a slot for ever;
* MAIL FROM with a declared SIZE over the limit: 552 5.3.4;
* RCPT TO for anything but the four configured addresses, or with a source
  route (``<@relay:letters@...>``): 550 5.1.1 (never a relay, whatever the
  domain); more than ``smtp.max_recipients``: 452;
* DATA over ``smtp.max_message_bytes``: 552 5.3.4, decided while the data
  streams in (aiosmtpd stops buffering at the limit and drains the rest);
* a line longer than ``smtp.max_line_bytes``: 500 (lines over RFC 5321's
  1,000 are taken up to that, and kept as they came);
* a header block over ``smtp.max_header_bytes`` per field,
  ``smtp.max_header_block_bytes`` in all or ``smtp.max_header_fields``
  fields: 552 5.3.4 naming the limit, before anything reads it
  (``inbound/limits.py``);
* DATA within the limits: read (on a worker thread, never under the archive's
  write lock), stored and committed, then 250; if storing fails, 451 so the
  sender keeps the letter and retries.

A message to several column addresses is stored once, as a letter when
``letters@`` is among them (a letter must reach the inbox), else as the
first one's kind.

With ``smtp.tls_cert``/``smtp.tls_key`` set, EHLO offers STARTTLS (TLS 1.2 or
later); with ``smtp.require_starttls`` too, MAIL before STARTTLS gets 530.
AUTH is never offered: this is an MX, not a submission server.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import weakref
from typing import Callable

from aiosmtpd.smtp import SMTP, Session, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mailer.clock import Clock
from mailer.config import Config
from mailer.inbound.limits import header_refusal
from mailer.store import scan
from mailer.store.archive import Envelope, Stored
from mailer.store.arrivals import receive
from mailer.store.writer import DatabaseWriter

log = logging.getLogger("mailer.listener")

#: The verbs a log line may name. Anything else a client sends where a
#: command belongs may be a line of a letter (a client that pipelines its
#: DATA after a refused RCPT sends the letter as "commands").
_SMTP_VERBS = frozenset({
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
    "HELP", "STARTTLS", "AUTH", "ETRN", "TURN", "ATRN", "XCLIENT", "XFORWARD", "PROXY",
})


class _WithholdClientText(logging.Filter):
    """Keep what clients send out of aiosmtpd's log lines ("mail.log").

    aiosmtpd logs each command line at INFO (seen with ``-v``) and the first
    word of an unknown command at WARNING (always seen). Both can be words of
    a reader's letter, which must never reach a log.
    """

    _ECHOES = frozenset({"%r >> %r", "_handle_client readline: %r", "DATA readline: %s",
                         "%r << challenge: %r", "%r can't decode base64: %s"})
    _NAMING_A_VERB = frozenset({"%r unrecognised: %s", "%r over limit for %s"})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self._ECHOES:
            return False
        if record.msg in self._NAMING_A_VERB and isinstance(record.args, tuple) and len(record.args) == 2:
            peer, word = record.args
            if str(word).upper() not in _SMTP_VERBS:
                record.args = (peer, "(a word that is no SMTP command; withheld)")
        return True


logging.getLogger("mail.log").addFilter(_WithholdClientText())

#: Per-session budgets for each command (aiosmtpd answers 421 and hangs up
#: past them). Generous for real mail servers, tight for abuse.
COMMAND_LIMITS = {
    "*": 30, "MAIL": 1000, "RCPT": 1000, "DATA": 1000, "RSET": 1000,
    "NOOP": 50, "EHLO": 20, "HELO": 20, "VRFY": 5, "EXPN": 5, "HELP": 10,
}


class ColumnSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on size refusals, connection caps and a DATA deadline."""

    def __init__(self, handler: "LetterHandler", *, line_length_limit: int, min_data_rate: float,
                 **kwargs) -> None:
        # Read by aiosmtpd's __init__ (the stream's limit) and by its DATA loop.
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)
        self._letter_handler = handler
        self._min_data_rate = min_data_rate
        #: loop.time() when DATA began and the bytes received since; None outside DATA.
        self._data_started: float | None = None
        self._data_bytes = 0
        #: Whether the session was turned away at connect (it never started).
        self._refused = False
        #: The client's address (without port), set when the session is admitted.
        self.client = ""
        #: Whether the RCPT being handled named a source route (<@relay:user@domain>).
        self.rcpt_source_routed = False

    def connection_made(self, transport) -> None:
        if self._original_transport is not None:
            # Called again once a STARTTLS handshake is done: the same session,
            # already admitted, so it must not count against the cap twice.
            super().connection_made(transport)
            return
        refusal = self._letter_handler.admit(self, _peer_host(transport.get_extra_info("peername")))
        if refusal is not None:
            self._refused = True
            transport.write(refusal.encode("ascii") + b"\r\n")
            transport.close()
            log.warning("refused connection: %s", refusal[10:])
            return
        super().connection_made(transport)

    @syntax("DATA")
    async def smtp_DATA(self, arg) -> None:
        # Marks the DATA phase for data_received's deadline.
        self._data_started, self._data_bytes = self.loop.time(), 0
        try:
            await super().smtp_DATA(arg)
        finally:
            self._data_started = None

    def data_received(self, data: bytes) -> None:
        # aiosmtpd restarts its idle timer only when a whole command arrives,
        # so a sender still streaming a long DATA would be cut off mid-letter.
        # RFC 5321 4.5.3.2 times each chunk: bytes count as activity, but only
        # while they keep up smtp.min_data_rate on average (Postfix's
        # smtpd_min_data_rate), or one byte a second would hold a session for ever.
        if self._data_started is not None and self._timeout_handle is not None:
            self._data_bytes += len(data)
            deadline = self._data_started + self._timeout_duration + self._data_bytes / self._min_data_rate
            self._reset_timeout(max(0.001, min(self._timeout_duration, deadline - self.loop.time())))
        super().data_received(data)

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            # aiosmtpd hangs up without a word; a sending server logs this line.
            self.transport.write(b"421 4.4.2 Timeout: the session was idle, or its data came too slowly\r\n")
        super()._timeout_cb()

    def connection_lost(self, exc) -> None:
        if self._refused or self._handler_coroutine is None:
            # Turned away in connection_made (aiosmtpd never started the
            # session, and its connection_lost would fail an assertion), or
            # already lost (aiosmtpd calls this itself when TLS setup fails).
            return
        self._letter_handler.release(self)
        super().connection_lost(exc)
        # The cancelled session task keeps its CancelledError, whose traceback
        # holds the DATA loop's frame (the letter read so far) and this
        # protocol: a reference cycle that only a full garbage collection
        # frees. Forget the task once it has finished, and the buffer, so an
        # abandoned session's memory goes back at once.
        self._handler_coroutine = None
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        self.envelope = None

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg) -> None:
        # aiosmtpd drops a source route and hands the handler only the final
        # mailbox, so "<@evil:letters@column.example>" would look like ours.
        # A route asks us to relay through someone else: note it for handle_RCPT.
        path = self._strip_command_keyword("TO:", arg or "")
        self.rcpt_source_routed = bool(path) and path.lstrip().startswith("<@")
        await super().smtp_RCPT(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        # EHLO never offers AUTH (handle_EHLO), but aiosmtpd would still run its
        # dialogue for a client that tries, and read the next lines as
        # credentials. An MX that relays nothing has nobody to log in.
        await self.push("502 5.5.1 AUTH not available: this server takes mail only for the column")

    async def push(self, status: str | bytes) -> None:
        if not isinstance(status, str):  # aiosmtpd pushes some lines as bytes
            return await super().push(status)
        # aiosmtpd words its size refusals without the RFC 3463 code the
        # sending server needs to tell "too big" (permanent) from a hiccup.
        if status.startswith("552 Error"):
            limit = self.data_size_limit
            status = f"552 5.3.4 Message too big for this column (limit {limit} bytes)"
            peer = self.session.peer if self.session else None
            log.info("refused message: too big (limit %s bytes) peer=%s", limit, _peer(peer))
        elif status.startswith("530 Must issue a STARTTLS"):
            # Same for smtp.require_starttls: 5.7.0 says "security policy".
            status = "530 5.7.0 Must issue a STARTTLS command first"
        await super().push(status)


class LetterHandler:
    """aiosmtpd handler: recipient policy, then archive before answering 250."""

    def __init__(
        self,
        config: Config,
        writer: DatabaseWriter,
        *,
        clock: Clock,
        on_stored: Callable[[Stored], None] | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.clock = clock
        self.on_stored = on_stored
        self.kinds = {
            config.addresses.letters.casefold(): "letter",
            config.addresses.subscribe.casefold(): "subscribe",
            config.addresses.unsubscribe.casefold(): "unsubscribe",
            config.addresses.bounces.casefold(): "bounce",
            # RFC 5321 4.5.1: every mail domain must accept postmaster. Such
            # mail is archived for the columnist, never answered automatically.
            f"postmaster@{config.smtp.domain}".casefold(): "postmaster",
        }
        self.sessions: weakref.WeakSet = weakref.WeakSet()
        #: Open sessions per client address, for smtp.max_connections_per_client.
        self.per_client: collections.Counter = collections.Counter()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def kind_of(self, address: str) -> str | None:
        """What mail to ``address`` is (letter, bounce, ...), or None when it is not ours.

        Digests go out from ``bounces+TOKEN@domain`` (VERP), so any tag after a
        ``+`` on the bounces address is a bounce too; the newsletter reads the tag.
        """
        kind = self.kinds.get(address.casefold())
        if kind is None:
            local, at, domain = address.rpartition("@")
            base, plus, tag = local.partition("+")
            if at and plus and tag and self.kinds.get(f"{base}@{domain}".casefold()) == "bounce":
                kind = "bounce"
        return kind

    # -- connection bookkeeping -------------------------------------------------
    def admit(self, protocol: ColumnSMTP, client: str) -> str | None:
        """None when a new session from ``client`` may start, else the 421 that turns it away."""
        if len(self.sessions) >= self.config.smtp.max_connections:
            return "421 4.7.0 Too many connections, please try again later"
        if self.per_client[client] >= self.config.smtp.max_connections_per_client:
            return "421 4.7.0 Too many connections from your address, please try again later"
        self.sessions.add(protocol)
        self.per_client[client] += 1
        protocol.client = client
        return None

    def release(self, protocol: ColumnSMTP) -> None:
        """Forget a closed session."""
        if protocol in self.sessions:
            self.sessions.discard(protocol)
            self.per_client[protocol.client] -= 1
            if self.per_client[protocol.client] <= 0:
                del self.per_client[protocol.client]

    # -- SMTP hooks ---------------------------------------------------------------
    async def handle_EHLO(self, server, session: Session, envelope: SmtpEnvelope, hostname: str, responses):
        """Answer EHLO as aiosmtpd would, but never offer AUTH.

        aiosmtpd offers AUTH once a session is encrypted. Readers' servers
        never log in to an MX, and a login that always fails only invites
        password guessing.
        """
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_RCPT(self, server, session: Session, envelope: SmtpEnvelope, address: str, rcpt_options):
        """Accept only the column's own addresses; never relay."""
        if getattr(server, "rcpt_source_routed", False):
            log.info("refused recipient: source-routed (a relay attempt) peer=%s", _peer(session.peer))
            return "550 5.1.1 Source routes are not accepted; this server only takes mail for the column"
        if self.kind_of(address) is None:
            log.info("refused recipient: not a column address peer=%s", _peer(session.peer))
            return f"550 5.1.1 <{_printable(address)}>: no such mailbox here; this server only takes mail for the column"
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session: Session, envelope: SmtpEnvelope):
        """Keep the message's bytes and commit them, and only then answer 250 (the pipeline files it)."""
        raw = bytes(envelope.original_content or b"")
        refusal = header_refusal(raw, self.config.smtp)
        if refusal is not None:
            log.info("refused message: %s peer=%s size=%d", refusal[10:], _peer(session.peer), len(raw))
            return refusal
        smtp_envelope = Envelope(
            # The null reverse path is kept as "" (aiosmtpd spells it "<>").
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            peer=_peer(session.peer),
            tls=_tls_version(session),
            helo=str(session.host_name or ""),
        )
        kinds = [self.kind_of(rcpt) for rcpt in envelope.rcpt_tos]
        kind = "letter" if "letter" in kinds else kinds[0]
        self._enter()
        try:
            stored: Stored = await self.writer.run(_receive, raw, smtp_envelope, kind, self.clock)
        except Exception as exc:  # noqa: BLE001 - any failure to store means "try later"
            log.error(
                "deferred message: could not store it (%s) from=%s size=%d",
                type(exc).__name__, _printable(smtp_envelope.mail_from), len(raw),
                extra={"event": "message_deferred", "error": type(exc).__name__,
                       "mail_from": _printable(smtp_envelope.mail_from), "size": len(raw)},
            )
            return "451 4.3.0 Could not store your message just now; please try again later"
        finally:
            self._leave()
        msgid = _printable(scan.message_id(raw))
        log.info(
            "%s message: id=%d kind=%s from=%s size=%d tls=%s message-id=%s",
            "duplicate" if stored.duplicate else "accepted",
            stored.message_id, kind, _printable(smtp_envelope.mail_from) or "<>",
            len(raw), smtp_envelope.tls or "no", msgid or "-",
            # The same facts as fields for a log shipper (mailer/logs.py); never subject or names.
            extra={"event": "message_stored", "archive_id": stored.message_id, "thread_id": stored.thread_id,
                   "kind": kind, "mail_from": _printable(smtp_envelope.mail_from), "size": len(raw),
                   "msgid": msgid, "duplicate": stored.duplicate},
        )
        if self.on_stored is not None and not stored.duplicate:
            self.on_stored(stored)
        return f"250 2.0.0 Ok: queued as {stored.message_id}"

    # -- graceful shutdown --------------------------------------------------------
    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no message is being stored; False if ``timeout`` ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close_idle_sessions(self) -> None:
        """Hang up on sessions that are not in the middle of storing a message."""
        for protocol in list(self.sessions):
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                try:
                    transport.write(b"421 4.3.2 Service shutting down, please try again later\r\n")
                except Exception:  # noqa: BLE001 - the peer may be gone already
                    pass
                transport.close()


def _receive(db, raw, envelope, kind, clock) -> Stored:
    # Runs on the writer thread, inside its batch transaction: no parsing here.
    return receive(db, raw, envelope, kind=kind, clock=clock)


def _tls_version(session: Session) -> str:
    """The TLS version the session was upgraded to ("TLSv1.3"), or "" if it is in clear."""
    info = session.ssl  # set by aiosmtpd after STARTTLS
    if not info:
        return ""
    ssl_object = info.get("ssl_object")
    return (ssl_object.version() if ssl_object is not None else None) or "TLS"


def _peer_host(peer) -> str:
    """The client's address without its port: what the per-client cap counts."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


def _peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


def _printable(text: str | None) -> str:
    """Keep log lines on one line whatever a client sends."""
    if not text:
        return ""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:200]


async def start_listener(
    config: Config, handler: LetterHandler, tls_context: ssl.SSLContext | None = None
) -> asyncio.AbstractServer:
    """Bind the SMTP port and start serving sessions with ``handler``.

    ``tls_context`` (from :func:`mailer.tls.server_context`) enables STARTTLS.
    """
    loop = asyncio.get_running_loop()

    def factory() -> ColumnSMTP:
        return ColumnSMTP(
            handler,
            line_length_limit=config.smtp.max_line_bytes,
            min_data_rate=config.smtp.min_data_rate,
            data_size_limit=config.smtp.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=config.smtp.domain,
            ident="mailer",
            timeout=config.smtp.idle_timeout,
            command_call_limit=COMMAND_LIMITS,
            tls_context=tls_context,
            require_starttls=config.smtp.require_starttls,
        )

    return await loop.create_server(factory, host=config.smtp.host, port=config.smtp.port)
