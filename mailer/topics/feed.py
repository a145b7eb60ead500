"""The column's feed, checked by itself: new pieces become topics with no command run.

``[topics] feed_url`` is fetched with a conditional GET: the ETag and
Last-Modified the server gave last time are sent back (``If-None-Match``,
``If-Modified-Since``), so an unchanged feed costs one ``304``. A feed that
changed is read with the catalog's feed reader (feedparser) and imported
in place, by slug, like ``mailer topics import URL``.

A check that fails (the server is down, answers 500, sends something that is
not a feed) is logged and kept in ``topic_feed.error`` for ``mailer status``;
it never raises to its caller, so a digest is composed from the topics
already known.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

import sqlite_utils

from mailer.clock import Clock, iso
from mailer.config import Config
from mailer.topics.catalog import FEED_MAX_BYTES, TopicImportError, import_topics, load_feed_bytes

log = logging.getLogger("mailer.topics.feed")

USER_AGENT = "mailer-topics/1 (+feed refresh)"


@dataclass
class FeedCheck:
    """What one check of the feed did."""

    url: str
    status: str  # "updated", "unchanged" (a 304, or nothing new), "failed" or "off" (no feed_url)
    added: int = 0
    updated: int = 0
    error: str = ""
    problems: int = 0

    def line(self) -> str:
        """One line for the terminal and the log."""
        if self.status == "off":
            return "no feed: [topics] feed_url is not set"
        if self.status == "failed":
            return f"feed {self.url}: failed: {self.error}"
        if self.status == "unchanged" and not self.added and not self.updated:
            return f"feed {self.url}: no new topics"
        text = f"feed {self.url}: {self.added} new, {self.updated} updated"
        return text + (f" ({self.problems} entries skipped)" if self.problems else "")


def feed_state(db: sqlite_utils.Database, url: str) -> dict | None:
    """The stored validators and last check of ``url``, or None if it was never checked."""
    rows = list(db.query("SELECT * FROM topic_feed WHERE url = ?", [url]))
    return rows[0] if rows else None


def last_check(db: sqlite_utils.Database) -> dict | None:
    """The most recently checked feed's row (for ``mailer status``), or None."""
    rows = list(db.query("SELECT * FROM topic_feed ORDER BY checked_at DESC LIMIT 1"))
    return rows[0] if rows else None


def _fetch(url: str, state: dict | None, timeout: float) -> tuple[int, bytes, str | None, str | None]:
    """(HTTP status, body, ETag, Last-Modified); 304 with an empty body when unchanged."""
    headers = {"User-Agent": USER_AGENT}
    if state and state.get("etag"):
        headers["If-None-Match"] = state["etag"]
    if state and state.get("last_modified"):
        headers["If-Modified-Since"] = state["last_modified"]
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(FEED_MAX_BYTES + 1)
            etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
            status = response.status
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return 304, b"", exc.headers.get("ETag"), exc.headers.get("Last-Modified")
        raise TopicImportError(f"the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TopicImportError(f"cannot fetch the feed: {getattr(exc, 'reason', exc)}") from None
    if len(data) > FEED_MAX_BYTES:
        raise TopicImportError(f"the feed is larger than {FEED_MAX_BYTES} bytes")
    return status, data, etag, modified


def refresh_feed(db: sqlite_utils.Database, url: str, *, clock: Clock, timeout: float = 30.0) -> FeedCheck:
    """Check ``url`` once (conditional GET) and import what is new; never raises."""
    state = feed_state(db, url)
    check = FeedCheck(url=url, status="unchanged")
    etag = state["etag"] if state else None
    modified = state["last_modified"] if state else None
    try:
        status, data, new_etag, new_modified = _fetch(url, state, timeout)
        if status != 304:
            found, problems = load_feed_bytes(url, data)
            counts = import_topics(db, found, clock=clock, source=url, partial=True)
            check.added, check.updated, check.problems = counts["added"], counts["updated"], len(problems)
            if check.added or check.updated:
                check.status = "updated"
            etag, modified = new_etag, new_modified
        else:
            etag, modified = new_etag or etag, new_modified or modified
    except TopicImportError as exc:
        check.status, check.error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the digest must still go out
        check.status, check.error = "failed", f"{type(exc).__name__}: {exc}"
    now = iso(clock())
    with db.atomic():
        db.execute(
            "INSERT INTO topic_feed (url, etag, last_modified, checked_at, ok_at, error, added, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET etag = excluded.etag, "
            "last_modified = excluded.last_modified, checked_at = excluded.checked_at, "
            "ok_at = coalesce(excluded.ok_at, topic_feed.ok_at), error = excluded.error, "
            "added = excluded.added, updated = excluded.updated",
            [url, etag, modified, now, None if check.error else now, check.error or None,
             check.added, check.updated],
        )
    if check.status == "failed":
        log.warning("topics feed check failed: %s", check.line(), extra={"event": "feed_failed", "url": url})
    else:
        log.info("%s", check.line(), extra={"event": "feed_checked", "url": url,
                                          "added": check.added, "updated": check.updated})
    return check


def refresh_configured_feed(config: Config, *, clock: Clock) -> FeedCheck:
    """Check ``[topics] feed_url`` with a connection of its own (for the scheduler and the digest)."""
    from mailer.store.db import open_database

    url = config.topics.feed_url
    if not url:
        return FeedCheck(url="", status="off")
    db = open_database(config.storage.database)
    try:
        return refresh_feed(db, url, clock=clock, timeout=config.topics.feed_timeout)
    finally:
        db.close()
