"""The desk password: scrypt hashes in config, checked in constant time.

Both faces need it: the CLI makes hashes (``mailer desk hash-password``) and
the web desk checks them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB of memory and ~0.1 s per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class PasswordHashError(ValueError):
    """A ``web.password_hash`` that is not in the format ``hash_password`` writes."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$key`` (salt and key in unpadded URL-safe base64) for config."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def parse_password_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    """The parts of a password hash; raises PasswordHashError saying what is wrong."""
    parts = (text or "").strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise PasswordHashError(
            "web.password_hash is not a hash made by `mailer desk hash-password` "
            "(expected scrypt$N$r$p$salt$key)"
        )
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, TypeError):
        raise PasswordHashError("web.password_hash: the numbers or the base64 parts are damaged") from None
    if n < 2 or n & (n - 1) or n > 2 ** 20 or not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * n * r * p > 2 ** 30:
        raise PasswordHashError("web.password_hash: scrypt parameters out of range")
    if len(salt) < 8 or len(key) < 16:
        raise PasswordHashError("web.password_hash: salt or key too short")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a hash_password string), in constant time."""
    n, r, p, salt, key = parse_password_hash(stored)
    candidate = hashlib.scrypt((password or "").encode("utf-8"), salt=salt, n=n, r=r, p=p,
                               maxmem=max(_SCRYPT_MAXMEM, 129 * n * r * p), dklen=len(key))
    return hmac.compare_digest(candidate, key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
