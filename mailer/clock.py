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


def in_zone(stamp: str, zone: dt.tzinfo) -> dt.datetime | None:
    """A stored timestamp as a time in ``zone``, or None when ``stamp`` is not one.

    The desk, the CLI and the web pages show the text itself in that case,
    so a malformed row is still readable rather than an error.
    """
    try:
        return parse_iso(stamp).astimezone(zone)
    except ValueError:
        return None
