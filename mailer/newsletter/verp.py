"""VERP: each digest copy's envelope sender names its subscriber, ``bounces+TOKEN@domain``.

As Mailman does, so that a bounce is known to be about that subscriber's copy
whatever address the bouncing server reports. TOKEN is lowercase base32 of
the subscriber id and an HMAC of it under the subscribers' token key (a label
of its own: it is not the unsubscribe token, since relays log envelope
senders). It cannot be guessed, names no address, and survives servers that
fold the case of a local part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from mailer.config import Config

#: Bytes of MAC in a bounce token (with the 8-byte id: 29 base32 characters).
_BOUNCE_MAC_BYTES = 10


def bounce_token(key: bytes, subscriber_id: int) -> str:
    """The per-subscriber tag of a digest copy's envelope sender (VERP).

    Lowercase base32 of the id and an HMAC under its own label, so it is not
    the unsubscribe token (relays log envelope senders), reveals no address,
    cannot be guessed, and survives servers that fold a local part's case.
    """
    ident = struct.pack(">Q", subscriber_id)
    mac = hmac.new(key, b"mailer-bounce:" + ident, hashlib.sha256).digest()[:_BOUNCE_MAC_BYTES]
    return base64.b32encode(ident + mac).decode("ascii").rstrip("=").lower()


def subscriber_for_bounce_token(key: bytes, token: str) -> int | None:
    """The subscriber id a genuine bounce token names, or None."""
    text = (token or "").strip().upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 8 + _BOUNCE_MAC_BYTES:
        return None
    (subscriber_id,) = struct.unpack(">Q", raw[:8])
    return subscriber_id if hmac.compare_digest(bounce_token(key, subscriber_id), text.lower()) else None


def verp_address(config: Config, key: bytes, subscriber_id: int) -> str:
    """A digest copy's envelope sender: ``bounces+TOKEN@domain``, so a bounce names its subscriber."""
    local, _, domain = config.addresses.bounces.rpartition("@")
    return f"{local}+{bounce_token(key, subscriber_id)}@{domain}"


def subscriber_for_verp_address(config: Config, key: bytes, address: str) -> int | None:
    """The subscriber whose digest a bounce to ``address`` (``bounces+TOKEN@domain``) is about."""
    local, _, domain = config.addresses.bounces.rpartition("@")
    rcpt_local, _, rcpt_domain = (address or "").strip().strip("<>").rpartition("@")
    base, plus, tag = rcpt_local.partition("+")
    if not plus or base.casefold() != local.casefold() or rcpt_domain.casefold() != domain.casefold():
        return None
    return subscriber_for_bounce_token(key, tag)
