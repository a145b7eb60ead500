"""Time, passed in rather than read from the wall.

Production code takes a ``clock`` argument (a callable returning an aware
UTC datetime) so tests can hand it a fixed or stepping time instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    """The archive's timestamp format: UTC, seconds, sortable as text."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one")
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def parse_iso(text: str) -> dt.datetime:
    """The inverse of :func:`iso`."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
