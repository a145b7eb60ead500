"""The operator's view: the facts ``mailer status`` prints, gathered in one place.

:func:`gather` reads them from the config, the archive and the schedule
files, and asks the configured listener and web addresses whether anything
answers there right now. It returns plain data with stable keys (documented
in docs/operations.md), so the same dict is the ``--json`` output and the
source of the human one.

"Today" and "this week" are in the column's timezone (``column.timezone``),
and a week starts on Monday at midnight. Times in the data are UTC archive
timestamps (``2026-11-30T13:00:00+00:00``); the human output shows them in
the column's timezone.
"""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
from pathlib import Path

import sqlite_utils

from mailer.app.pipeline_process import worker_running
from mailer.clock import Clock, iso
from mailer.config import Config
from mailer.newsletter import subscribers
from mailer.outbound import outbox
from mailer.store import archive, arrivals

#: How long a probe of the listener or web address may take.
PROBE_TIMEOUT = 0.5
WEEK_STARTS = "monday"


def day_and_week_start(now: dt.datetime, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """Local midnight today and local midnight of this week's Monday, as aware datetimes."""
    local = now.astimezone(zone)
    today = dt.datetime.combine(local.date(), dt.time(0), tzinfo=zone)
    monday = dt.datetime.combine(local.date() - dt.timedelta(days=local.weekday()), dt.time(0), tzinfo=zone)
    return today, monday


def answering(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool | None:
    """Whether something accepts a TCP connection at ``host:port`` right now (None: port 0, unknowable).

    A wildcard bind address (``0.0.0.0``, ``::``) is probed on loopback.
    Only the connection is tried: nothing is sent, so the listener stores nothing.
    """
    if port == 0:
        return None
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=timeout):
            return True
    except OSError:
        return False


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def database_size(path: Path) -> dict:
    """Bytes on disk of the archive: the main file, its write-ahead log, and both together."""
    def size(p: Path) -> int:
        try:
            return p.stat().st_size
        except FileNotFoundError:
            return 0

    path = Path(path)
    main = size(path)
    wal = size(path.with_name(path.name + "-wal"))
    return {"path": str(path), "bytes": main + wal, "main_bytes": main, "wal_bytes": wal}


def digest_facts(config: Config, db: sqlite_utils.Database, now: dt.datetime) -> dict:
    """The last digest (any state) and the next fire time of every schedule."""
    from mailer.newsletter.digest import list_digests
    from mailer.newsletter.scheduler import (
        ScheduleError,
        load_schedules,
        next_fire_times,
    )

    last = list_digests(db, limit=1)
    facts: dict = {"last": None, "next": None, "schedules": [], "error": None}
    if last:
        row = last[0]
        facts["last"] = {
            "id": row["id"], "period": row["period"], "status": row["status"],
            "created_at": row["created_at"], "finished_at": row["finished_at"],
            "topics": row["topics"], "sent": row["sent"], "not_sent": row["other"],
        }
    try:
        schedules = load_schedules(config.digest.schedules, default_timezone=config.column.timezone)
    except ScheduleError as exc:
        facts["error"] = str(exc)
        return facts
    for schedule in schedules:
        upcoming = next_fire_times(schedule, now)
        at = iso(upcoming[0]) if upcoming else None
        facts["schedules"].append({"name": schedule.name, "cron": schedule.cron, "job": schedule.job,
                                   "timezone": schedule.timezone, "next_at": at})
        if schedule.job == "digest" and at is not None and (facts["next"] is None or at < facts["next"]["at"]):
            facts["next"] = {"schedule": schedule.name, "at": at}
    return facts


def feed_facts(config: Config, db: sqlite_utils.Database) -> dict:
    """The column's feed: its URL, the last check, and the error if that check failed."""
    from mailer.topics.feed import feed_state

    url = config.topics.feed_url
    facts: dict = {"url": url or None, "checked_at": None, "ok_at": None, "error": None, "added": 0}
    if not url:
        return facts
    try:
        row = feed_state(db, url)
    except sqlite3.OperationalError:  # an archive from before the feed table
        row = None
    if row:
        facts.update(checked_at=row["checked_at"], ok_at=row["ok_at"], error=row["error"], added=row["added"])
    return facts


def gather(config: Config, db: sqlite_utils.Database, *, clock: Clock, timeout: float = PROBE_TIMEOUT) -> dict:
    """Everything ``mailer status`` reports, as plain data with stable keys."""
    now = clock()
    today, monday = day_and_week_start(now, config.column.zone)
    smtp, web = config.smtp, config.web
    return {
        "generated_at": iso(now),
        "timezone": config.column.timezone,
        "week_starts": WEEK_STARTS,
        "listener": {
            "address": _address(smtp.host, smtp.port), "host": smtp.host, "port": smtp.port,
            "answering": answering(smtp.host, smtp.port, timeout),
        },
        "web": {
            "enabled": web.enabled, "address": _address(web.host, web.port), "host": web.host, "port": web.port,
            "answering": answering(web.host, web.port, timeout) if web.enabled else None,
        },
        "letters": {
            "today": archive.letters_since(db, iso(today)),
            "this_week": archive.letters_since(db, iso(monday)),
            "today_since": iso(today),
            "week_since": iso(monday),
        },
        # Letters with a 250 whose bytes are kept but not parsed and threaded yet.
        "filing": arrivals.waiting(db, now),
        "outbox": outbox.counts(db) | {"next_attempt_at": outbox.next_due_at(db)},
        "digest": digest_facts(config, db, now),
        "topics_feed": feed_facts(config, db),
        "subscribers": subscribers.counts(db),
        "database": database_size(config.storage.database),
        # Where letters are filed and answered; with a worker process, whether one runs now.
        "pipeline": {
            "worker": config.pipeline.worker,
            "worker_running": worker_running(config.storage.database) if config.pipeline.worker == "process" else None,
        },
    }
