"""The shapes of a reader's text the desk recognises: greetings, closings, slugs, dates."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from mailer.clock import in_zone

#: What a topic draft puts where it removed an identifying detail.
PLACEHOLDERS = ("[name]", "[email]", "[phone]", "[address]", "[link]")

#: A letter's opening line ("Dear column,").
GREETING = re.compile(r"^\s*(dear|hi|hello|hey)\b[^\n]{0,40}$", re.IGNORECASE)

#: A letter's closing line ("Thanks,", "Best wishes").
CLOSING = re.compile(
    r"^\s*(?:thanks|thank you|many thanks|best|best wishes|regards|kind regards|warm regards|"
    r"sincerely|yours|yours truly|love|cheers|warmly|all the best|take care|gratefully)\b[^\n]{0,24}$",
    re.IGNORECASE,
)


def slug(text: str, limit: int = 60) -> str:
    """A file- and URL-safe name from ``text``: lowercase ASCII words joined by '-'."""
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, " ")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = ascii_text.replace("'", "")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    result = ""
    for word in words:
        candidate = f"{result}-{word}" if result else word
        if len(candidate) > limit:
            break
        result = candidate
    return result


def when_text(created_at: str, zone: dt.tzinfo) -> str:
    """A stored time as the columnist reads it (\"Tue 3 Dec 2026\"), in ``zone``."""
    moment = in_zone(created_at, zone)
    if moment is None:
        return created_at
    return f"{moment:%a} {moment.day} {moment:%b %Y}"
