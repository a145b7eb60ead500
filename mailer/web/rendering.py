"""What every desk page shares: the column's look and times in the column's zone."""

from __future__ import annotations

import datetime as dt

from mailer import desk
from mailer.clock import in_zone
from mailer.config import Config


def base_context(config: Config) -> dict:
    """What every desk page is rendered with: the column, time formatting, reflow."""
    return {"column": config.column, "when": when_fn(config), "when_full": when_full_fn(config),
            "reflow": desk.reflow}


def when_fn(config: Config):
    """A filter for short local times in the column's zone."""
    zone = config.column.zone

    def when(stamp: str | None) -> str:
        """A short local time: 09:14 today, Tue 24 Nov this year, 24 Nov 2025 before."""
        if not stamp:
            return ""
        moment = in_zone(stamp, zone)
        if moment is None:
            return stamp
        today = dt.datetime.now(zone).date()
        if moment.date() == today:
            return f"{moment:%H:%M}"
        if moment.year == today.year:
            return f"{moment:%a} {moment.day} {moment:%b}"
        return f"{moment.day} {moment:%b %Y}"

    return when


def when_full_fn(config: Config):
    """A filter for full local times, with the zone's name."""
    zone = config.column.zone

    def when_full(stamp: str | None) -> str:
        if not stamp:
            return ""
        moment = in_zone(stamp, zone)
        if moment is None:
            return stamp
        return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M} ({moment:%Z})"

    return when_full
