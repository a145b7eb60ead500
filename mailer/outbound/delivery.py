"""Handing a finished message to the world: a Maildir folder or an SMTP relay.

Both transports answer the same question the outbox worker asks: did this
message get delivered, and if not, is it worth trying again? A temporary
failure (4xx, refused connection, timeout) raises ``TemporaryFailure``; a
permanent one (5xx) raises ``PermanentFailure`` with the relay's words.

The relay connection is encrypted as configured (STARTTLS or implicit TLS,
the certificate always verified) and never falls back to plaintext; a login
happens only over TLS, and the password never appears in a failure's text.
"""

from __future__ import annotations

import asyncio
import base64
import mailbox
import os
import socket
import ssl
from pathlib import Path
from typing import Iterable, Protocol

import aiosmtplib

from mailer.config import ConfigError, DeliveryConfig
from mailer.tls import relay_context


class DeliveryFailure(Exception):
    """Delivery did not happen; the message says what the other side said."""


class TemporaryFailure(DeliveryFailure):
    """Worth trying again later (4xx, connection refused, timeout)."""


class PermanentFailure(DeliveryFailure):
    """Will never work as it is (5xx): mark the message failed."""


class Transport(Protocol):
    """Something that delivers raw message bytes."""

    async def deliver(self, raw: bytes, mail_from: str, rcpt_to: list[str], key: str) -> str:
        """Deliver; return the other side's acceptance text, or raise DeliveryFailure."""

    async def close(self) -> None:
        """Release connections."""


class MaildirTransport:
    """Writes each message as one file in a Maildir's ``new/`` folder.

    The file name is the outbox row's delivery key, so delivering the same
    row twice (after a crash between writing and recording it) leaves one
    file, not two. Like a local delivery agent, it prepends Return-Path and
    Delivered-To so the envelope is visible to whoever reads the folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        mailbox.Maildir(str(self.path), create=True)  # creates cur/ new/ tmp/
        self.hostname = socket.gethostname().replace("/", "_").replace(":", "_")

    async def deliver(self, raw: bytes, mail_from: str, rcpt_to: list[str], key: str) -> str:
        """Write the message atomically (tmp/ then rename into new/)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self._write, raw, mail_from, rcpt_to, key
        )

    def _write(self, raw: bytes, mail_from: str, rcpt_to: list[str], key: str) -> str:
        name = f"{key}.{self.hostname}"
        final = self.path / "new" / name
        if final.exists() or any((self.path / "cur").glob(f"{name}*")):
            return f"already in Maildir as {name}"
        envelope = f"Return-Path: <{mail_from}>\r\n".encode()
        envelope += "".join(f"Delivered-To: {r}\r\n" for r in rcpt_to).encode("utf-8")
        tmp = self.path / "tmp" / name
        try:
            with open(tmp, "wb") as handle:
                handle.write(envelope + raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write to Maildir {self.path}: {exc}") from exc
        return f"delivered to Maildir as {name}"

    async def close(self) -> None:
        """Nothing to release."""


class SmtpTransport:
    """Hands messages to a relay with aiosmtplib, reusing a small pool of connections."""

    def __init__(
        self,
        config: DeliveryConfig,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.password = password
        self.tls_context = tls_context
        self._pool: asyncio.LifoQueue = asyncio.LifoQueue()

    async def _connect(self) -> aiosmtplib.SMTP:
        return await connect_relay(self.config, self.tls_context, self.password)

    async def _acquire(self) -> aiosmtplib.SMTP:
        while not self._pool.empty():
            client = self._pool.get_nowait()
            if client.is_connected:
                return client
        return await self._connect()

    async def deliver(self, raw: bytes, mail_from: str, rcpt_to: list[str], key: str) -> str:
        """Send over SMTP; classify any failure as temporary or permanent."""
        try:
            return await self._deliver(raw, mail_from, rcpt_to)
        except DeliveryFailure as exc:
            # The text is logged and kept in outbox.last_error: a relay that
            # echoes what it was sent must not put the password there.
            raise redact(exc, self.config.username, self.password) from None

    async def _deliver(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> str:
        try:
            client = await self._acquire()
        except DeliveryFailure:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            raise TemporaryFailure(f"relay {self.config.relay_host}:{self.config.relay_port} unreachable: {exc}") from None
        keep = False
        try:
            options = mail_parameters(client, eight_bit=not raw.isascii(), addresses=[mail_from, *rcpt_to])
            errors, response = await client.sendmail(mail_from, rcpt_to, raw, mail_options=options)
            if errors:
                code, text = next(iter(errors.values()))
                failure = _classify(aiosmtplib.SMTPResponseException(code, text))
                keep = True
                raise failure
            keep = True
            return response
        except DeliveryFailure:
            keep = True  # refused by the relay, or not sent at all: the session is still usable
            raise
        except aiosmtplib.SMTPRecipientsRefused as exc:
            keep = True
            first = exc.recipients[0] if exc.recipients else None
            if first is not None:
                raise _classify(first) from None
            raise PermanentFailure("all recipients refused") from None
        except aiosmtplib.SMTPResponseException as exc:
            keep = True  # the session is still usable after a refused transaction
            raise _classify(exc) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            raise TemporaryFailure(f"relay connection failed: {exc}") from None
        finally:
            if keep and client.is_connected:
                try:
                    await client.rset()
                    self._pool.put_nowait(client)
                except Exception:  # noqa: BLE001 - a broken connection is simply dropped
                    client.close()
            elif client.is_connected:
                client.close()

    async def close(self) -> None:
        """Say QUIT on every pooled connection."""
        while not self._pool.empty():
            client = self._pool.get_nowait()
            try:
                await client.quit()
            except Exception:  # noqa: BLE001
                client.close()


def mail_parameters(client: aiosmtplib.SMTP, *, eight_bit: bool, addresses: Iterable[str]) -> list[str]:
    """The MAIL FROM parameters a message needs, for the outbox and the digest alike.

    8-bit data is declared with BODY=8BITMIME (RFC 6152), and an envelope
    with a non-ASCII address with SMTPUTF8 (RFC 6531; readers may write from
    such addresses, and are answered there), each only to a relay that
    advertised it (``client`` has had its EHLO: see :func:`connect_relay`).
    A relay without the extension gets nothing: converting the message here
    would change the bytes the archive keeps and DKIM signs, so the delivery
    fails, temporarily, like a relay without STARTTLS: the message is fine,
    the relay's setup is not.
    """
    options = []
    if not all(address.isascii() for address in addresses):
        if not client.supports_extension("smtputf8"):
            raise TemporaryFailure(
                f"relay {client.hostname}:{client.port} does not offer SMTPUTF8, and this message has an "
                "internationalised address; nothing was sent, will retry (Postfix offers it with smtputf8_enable)"
            )
        options.append("SMTPUTF8")
    if eight_bit:
        if not client.supports_extension("8bitmime"):
            raise TemporaryFailure(
                f"relay {client.hostname}:{client.port} does not offer 8BITMIME, and this message has 8-bit "
                "text; nothing was sent, will retry (the relay must accept 8-bit mail: Postfix does)"
            )
        options.append("BODY=8BITMIME")
    return options


def mailbox_encoding(options: list[str]) -> str:
    """How aiosmtplib must encode the envelope's addresses for these MAIL FROM parameters."""
    return "utf-8" if "SMTPUTF8" in options else "ascii"


def _classify(exc: aiosmtplib.SMTPResponseException) -> DeliveryFailure:
    text = f"{exc.code} {exc.message}"
    return PermanentFailure(text) if 500 <= exc.code < 600 else TemporaryFailure(text)


async def connect_relay(
    config: DeliveryConfig, tls_context: ssl.SSLContext | None, password: str | None
) -> aiosmtplib.SMTP:
    """Open a session with the relay: TLS as configured, a login only over TLS, and EHLO said.

    Raises TemporaryFailure or PermanentFailure (a 5xx greeting). A relay
    without STARTTLS when it is configured, an untrusted certificate and a
    refused login are temporary: the message is fine, the setup is not, and
    it is retried once that is fixed. Callers pass failures through
    :func:`redact` before showing them.
    """
    where = f"relay {config.relay_host}:{config.relay_port}"
    client = aiosmtplib.SMTP(
        hostname=config.relay_host,
        port=config.relay_port,
        timeout=config.timeout,
        use_tls=config.implicit_tls,
        # False rather than aiosmtplib's default None, which means "upgrade
        # if offered" and so carries on in clear when it is not: STARTTLS is
        # done by hand below, so a relay without it is a failure.
        start_tls=False,
        tls_context=tls_context,
    )
    try:
        await client.connect()
        if config.starttls:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                raise TemporaryFailure(
                    f"{where} does not offer STARTTLS (delivery.starttls = true); "
                    "nothing was sent in clear, will retry"
                )
            await client.starttls()
        if config.username:
            if client.get_transport_info("sslcontext") is None:
                # config.py refuses this setup; never send a password in clear regardless.
                raise TemporaryFailure(f"{where}: not logging in over an unencrypted connection")
            try:
                await client.login(config.username, password or "")
            except aiosmtplib.SMTPResponseException as exc:
                raise TemporaryFailure(
                    f"{where} refused the login of delivery.username {config.username!r}: "
                    f"{exc.code} {exc.message} (check the password in ${config.password_env})"
                ) from None
        if client.is_ehlo_or_helo_needed:
            # Callers ask about extensions (8BITMIME, SMTPUTF8: mail_parameters) before MAIL FROM.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not client.is_connected:
                    raise
                await client.helo()  # a relay without ESMTP: no extensions, 7-bit mail only
    except DeliveryFailure:
        client.close()
        raise
    except aiosmtplib.SMTPResponseException as exc:
        client.close()
        raise _classify(exc) from None
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        client.close()
        untrusted = _certificate_error(exc)
        if untrusted is not None:
            raise TemporaryFailure(
                f"{where}: its TLS certificate is not trusted ({untrusted.verify_message}); "
                "if the relay uses a private CA, set delivery.ca_file"
            ) from None
        raise TemporaryFailure(f"{where} unreachable: {exc}") from None
    return client


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    # aiosmtplib wraps the ssl error for implicit TLS, not for STARTTLS.
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def redact(failure: DeliveryFailure, username: str, password: str | None) -> DeliveryFailure:
    """The same failure with the password, and the AUTH encodings of it, cut out of its text."""
    if not password:
        return failure
    secrets = {
        password,
        base64.b64encode(password.encode()).decode(),  # AUTH LOGIN
        base64.b64encode(f"\0{username}\0{password}".encode()).decode(),  # AUTH PLAIN
    }
    text = str(failure)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return type(failure)(text)


def relay_password(config: DeliveryConfig, environ) -> str | None:
    """The relay password from the variable named by ``delivery.password_env``; None without a login.

    Raises ConfigError when a login is configured but the variable is empty,
    so ``mailer serve`` says so at startup instead of every delivery failing.
    """
    if not config.username:
        return None
    password = environ.get(config.password_env, "")
    if not password:
        raise ConfigError(
            f"delivery.username is set, but the environment variable {config.password_env} "
            "(delivery.password_env) that should hold the relay password is empty or unset"
        )
    return password


def make_transport(config: DeliveryConfig, environ=None) -> Transport:
    """The transport the config asks for (the relay password comes from the environment).

    Raises ConfigError for a missing password or an unreadable ``delivery.ca_file``.
    """
    environ = os.environ if environ is None else environ
    if config.mode == "smtp":
        return SmtpTransport(
            config, password=relay_password(config, environ), tls_context=relay_context(config)
        )
    return MaildirTransport(config.maildir)
