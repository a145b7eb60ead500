"""Handing a finished message to the world: a Maildir folder or an SMTP relay.

Both transports answer the same question the outbox worker asks: did this
message get delivered, and if not, is it worth trying again? A temporary
failure (4xx, refused connection, timeout) raises ``TemporaryFailure``; a
permanent one (5xx) raises ``PermanentFailure`` with the relay's words.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import socket
from pathlib import Path
from typing import Protocol

import aiosmtplib

from .config import DeliveryConfig


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

    def __init__(self, config: DeliveryConfig, password: str | None = None) -> None:
        self.config = config
        self.password = password
        self._pool: asyncio.LifoQueue = asyncio.LifoQueue()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.config.relay_host,
            port=self.config.relay_port,
            timeout=self.config.timeout,
            start_tls=self.config.starttls,
        )
        await client.connect()
        if self.config.username:
            await client.login(self.config.username, self.password or "")
        return client

    async def _acquire(self) -> aiosmtplib.SMTP:
        while not self._pool.empty():
            client = self._pool.get_nowait()
            if client.is_connected:
                return client
        return await self._connect()

    async def deliver(self, raw: bytes, mail_from: str, rcpt_to: list[str], key: str) -> str:
        """Send over SMTP; classify any failure as temporary or permanent."""
        try:
            client = await self._acquire()
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            raise TemporaryFailure(f"relay {self.config.relay_host}:{self.config.relay_port} unreachable: {exc}") from None
        keep = False
        try:
            errors, response = await client.sendmail(mail_from, rcpt_to, raw)
            if errors:
                code, text = next(iter(errors.values()))
                failure = _classify(aiosmtplib.SMTPResponseException(code, text))
                keep = True
                raise failure
            keep = True
            return response
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


def _classify(exc: aiosmtplib.SMTPResponseException) -> DeliveryFailure:
    text = f"{exc.code} {exc.message}"
    return PermanentFailure(text) if 500 <= exc.code < 600 else TemporaryFailure(text)


def make_transport(config: DeliveryConfig, environ=None) -> Transport:
    """The transport the config asks for (the relay password comes from the environment)."""
    environ = os.environ if environ is None else environ
    if config.mode == "smtp":
        return SmtpTransport(config, password=environ.get(config.password_env))
    return MaildirTransport(config.maildir)
