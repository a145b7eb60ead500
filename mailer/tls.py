"""TLS contexts: the listener's certificate for STARTTLS, and trust in the relay's.

Both are built once, when ``mailer serve`` starts, so that a missing,
unreadable or mismatched file stops the service with a message that names the
config key and the path, before the SMTP port is opened, rather than failing
the first reader whose server asks for STARTTLS.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mailer.config import ConfigError, DeliveryConfig, SmtpConfig

#: Older protocols have known attacks; every maintained mail server speaks 1.2.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class _EncryptedKey(Exception):
    """Raised from the passphrase callback: the key file asks for a passphrase."""


def server_context(smtp: SmtpConfig) -> ssl.SSLContext | None:
    """The listener's STARTTLS context from ``smtp.tls_cert``/``smtp.tls_key``, or None if unset.

    Raises ConfigError naming the key and the path when a file is missing,
    unreadable, not PEM, protected by a passphrase, or when the key does not
    belong to the certificate.
    """
    if not smtp.tls_cert and not smtp.tls_key:
        return None
    # config.py refuses one without the other; this guards callers that build
    # an SmtpConfig by hand.
    if not smtp.tls_cert or not smtp.tls_key:
        raise ConfigError("smtp.tls_cert and smtp.tls_key: set both (or neither, for no STARTTLS)")
    cert = _read("smtp.tls_cert", smtp.tls_cert)
    key = _read("smtp.tls_key", smtp.tls_key)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ConfigError(f"smtp.tls_cert: {smtp.tls_cert} is not a PEM certificate "
                          "(expected a '-----BEGIN CERTIFICATE-----' block)")
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"smtp.tls_key: {smtp.tls_key} is not a PEM private key "
                          "(expected a '-----BEGIN ... PRIVATE KEY-----' block)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        # Without a callback OpenSSL would prompt for a passphrase on the
        # terminal, which hangs a service started by systemd.
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key, password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(
            f"smtp.tls_key: {smtp.tls_key} is protected by a passphrase; mailer needs the key "
            "without one (e.g. `openssl pkey -in KEY -out KEY.plain`), readable only by its user"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"smtp.tls_key: {smtp.tls_key} is not the private key of the certificate "
                f"smtp.tls_cert: {smtp.tls_cert} (mixed up after a renewal?)"
            ) from None
        raise ConfigError(
            f"smtp.tls_cert/smtp.tls_key: cannot use {smtp.tls_cert} with {smtp.tls_key}: {exc}"
        ) from None
    return context


def relay_context(delivery: DeliveryConfig) -> ssl.SSLContext | None:
    """The context that verifies the relay's certificate, or None when the relay is not TLS.

    Verification is always on: the system's trust store, or only
    ``delivery.ca_file`` when it is set (a relay with a private CA). The
    certificate must name ``delivery.relay_host``.
    """
    if not (delivery.starttls or delivery.implicit_tls):
        return None
    if delivery.ca_file:
        _read("delivery.ca_file", delivery.ca_file)
        try:
            context = ssl.create_default_context(cafile=delivery.ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"delivery.ca_file: {delivery.ca_file} holds no usable PEM certificate: {exc}"
            ) from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = MINIMUM_VERSION
    return context


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def _no_passphrase() -> bytes:
    raise _EncryptedKey()
