"""Transports for digest copies: a checkpoint before the final dot.

A copy goes over one reused SMTP connection (or into the Maildir) in two
steps: everything up to the end of the body, then, once the send log holds
the copy as ``sending``, the final ``.`` that hands it over.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiosmtplib

from mailer.config import DeliveryConfig
from mailer.outbound.delivery import (
    DeliveryFailure,
    MaildirTransport,
    PermanentFailure,
    TemporaryFailure,
    connect_relay,
    mail_parameters,
    mailbox_encoding,
    redact,
    relay_password,
)
from mailer.tls import relay_context

log = logging.getLogger("mailer.digest")

class Skip(Exception):
    """The subscriber left between being read and being sent to."""


class Uncertain(Exception):
    """The end of the message went to the relay, but no answer came back."""





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
        # TLS, certificate checks, login-only-over-TLS and EHLO are delivery.py's.
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
        # A missing password or CA file is a ConfigError here, before any copy is sent.
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
