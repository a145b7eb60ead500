"""When digests go out: schedule files run by APScheduler 3.x on the service's loop.

Each ``*.toml`` file in ``digest.schedules`` is one schedule, named after the
file (``weekly_digest.toml`` is ``weekly_digest``)::

    job = "digest"            # what to run: "digest", or "topics_feed" (check [topics] feed_url)
    cron = "0 8 * * mon"      # minute hour day-of-month month day-of-week
    timezone = "Europe/Paris" # optional; default column.timezone

Day-of-week numbers mean what they mean in crontab (0 and 7 are Sunday, 1 is
Monday), not APScheduler 3's own numbering; names are clearer still.

A fire time is a *period*: ``weekly_digest@2026-11-30T13:00:00+00:00``. The
digests table holds one row per period (sent, or found to have no new
topics), so a period is never served twice, whatever APScheduler remembers
(it remembers nothing across a restart). When the service starts it looks
back ``digest.grace_period_hours`` for the latest fire time it missed and
runs that period once; an unfinished digest (a run that was killed) is
resumed first.

Time is a parameter: :func:`next_fire_times` and :func:`due_fire_time` take
``now``, so tests can ask what happens across a daylight-saving change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from mailer.clock import Clock, iso
from mailer.config import Config

log = logging.getLogger("mailer.scheduler")

#: What a schedule file can run: the digest, or a check of the column's feed.
JOBS = ("digest", "topics_feed")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ScheduleError(Exception):
    """A schedule file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Schedule:
    """One schedule file."""

    name: str
    cron: str
    timezone: str
    job: str = "digest"

    def trigger(self) -> CronTrigger:
        """The APScheduler trigger for this schedule."""
        fields = self.cron.split()
        if len(fields) != 5:
            raise ScheduleError(f"{self.name}: cron: expected 5 fields (minute hour day month weekday), got {self.cron!r}")
        minute, hour, day, month, weekday = fields
        try:
            return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                               day_of_week=crontab_weekdays(weekday), timezone=ZoneInfo(self.timezone))
        except ValueError as exc:
            raise ScheduleError(f"{self.name}: cron: {self.cron!r}: {exc}") from None


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday) in APScheduler 3's terms (names)."""
    if not re.fullmatch(r"[0-7*,/-]+", field) or field in ("*", "?"):
        return field  # names, or every day: the same in both
    days: set[int] = set()
    for item in field.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            low_text, _, high_text = base.partition("-")
            low, high = int(low_text), int(high_text)
        else:
            low = int(base)
            high = 6 if step else low
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high):
            raise ScheduleError(f"day of week {item!r}: expected 0-7 (0 and 7 are Sunday)")
        days.update(d % 7 for d in range(low, high + 1, int(step) if step else 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def load_schedules(folder: Path, *, default_timezone: str) -> list[Schedule]:
    """Every schedule file in ``folder`` (none if it does not exist), checked."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    schedules = []
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ScheduleError(f"{path}: cannot read: {exc}") from None
        unknown = set(data) - {"job", "cron", "timezone"}
        if unknown:
            raise ScheduleError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: job, cron, timezone)")
        job = data.get("job", "digest")
        if job not in JOBS:
            raise ScheduleError(f"{path}: job: {job!r} is not a job (known: {', '.join(JOBS)})")
        cron = data.get("cron")
        if not isinstance(cron, str) or not cron.strip():
            raise ScheduleError(f"{path}: cron: expected a cron expression such as \"0 8 * * mon\"")
        timezone = data.get("timezone") or default_timezone
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"{path}: timezone: {timezone!r} is not a known time zone (e.g. America/New_York)") from None
        schedule = Schedule(name=path.stem, cron=" ".join(cron.split()), timezone=timezone, job=job)
        try:
            schedule.trigger()
        except ScheduleError as exc:
            raise ScheduleError(f"{path}: {exc}") from None
        schedules.append(schedule)
    return schedules


def next_fire_times(schedule: Schedule, now: dt.datetime, count: int = 1) -> list[dt.datetime]:
    """The next ``count`` fire times after ``now`` (aware datetimes in the schedule's zone)."""
    trigger = schedule.trigger()
    times: list[dt.datetime] = []
    previous = None
    moment = now
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous, moment = fire, fire + dt.timedelta(microseconds=1)
    return times


def due_fire_time(schedule: Schedule, now: dt.datetime, grace: dt.timedelta) -> dt.datetime | None:
    """The latest fire time in ``[now - grace, now]``: the period to serve now, if any."""
    trigger = schedule.trigger()
    latest = None
    fire = trigger.get_next_fire_time(None, now - grace)
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(microseconds=1))
    return latest


def period_key(schedule: Schedule, fire_time: dt.datetime) -> str:
    """The idempotency key of one firing: schedule name and fire time (UTC)."""
    return f"{schedule.name}@{iso(fire_time)}"


class DigestScheduler:
    """Service component: fires digests on schedule, catches up what was missed."""

    def __init__(self, config: Config, *, clock: Clock, signer=None) -> None:
        self.config = config
        self.clock = clock
        self.signer = signer  # the service's DKIM signer, loaded once at startup
        self.schedules: list[Schedule] = []
        self.scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.runs: list = []  # summaries of runs, newest last (for tests and the log)
        self.feed_checks: list = []  # what each scheduled feed check did, newest last

    @property
    def grace(self) -> dt.timedelta:
        return dt.timedelta(hours=self.config.digest.grace_period_hours)

    async def start(self) -> None:
        """Read the schedule files, start APScheduler, then catch up in the background."""
        self.schedules = load_schedules(self.config.digest.schedules, default_timezone=self.config.column.timezone)
        if not self.schedules:
            log.info("no schedules in %s: digests go out only with `mailer digest send`",
                     self.config.digest.schedules)
        self.scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=dt.timezone.utc)
        for schedule in self.schedules:
            self.scheduler.add_job(
                self._fire, schedule.trigger(), args=[schedule], id=schedule.name, name=schedule.name,
                coalesce=True, max_instances=1, misfire_grace_time=int(self.grace.total_seconds()) or None,
            )
            nxt = next_fire_times(schedule, self.clock())
            log.info("schedule %s (%s, %s): next at %s", schedule.name, schedule.cron, schedule.timezone,
                     nxt[0].isoformat() if nxt else "never")
        self.scheduler.start()
        self._spawn(self.catch_up())

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh_feed(self):
        """Check ``[topics] feed_url`` now (the ``topics_feed`` job); a failure is logged, never raised."""
        from mailer.topics.feed import refresh_configured_feed

        if not self.config.topics.feed_url:
            log.info("schedule topics_feed fired, but [topics] feed_url is not set")
            return None
        check = await asyncio.get_running_loop().run_in_executor(
            None, lambda: refresh_configured_feed(self.config, clock=self.clock))
        self.feed_checks.append(check)
        return check

    async def catch_up(self) -> None:
        """Resume a killed run, then serve any period missed within the grace period."""
        await self._run(None, compose=False)
        now = self.clock()
        for schedule in self.schedules:
            if schedule.job != "digest":
                continue
            fire = due_fire_time(schedule, now, self.grace)
            if fire is not None:
                await self._run(period_key(schedule, fire))

    async def _fire(self, schedule: Schedule) -> None:
        if schedule.job == "topics_feed":
            self._spawn(self.refresh_feed())
            return
        fire = due_fire_time(schedule, self.clock(), self.grace)
        if fire is None:
            log.warning("schedule %s fired, but no fire time is due by the service's clock", schedule.name)
            return
        # Run as our own task, so that stopping the service can wind it down.
        self._spawn(self._run(period_key(schedule, fire)))

    async def _run(self, period: str | None, *, compose: bool = True) -> None:
        from mailer.newsletter.digest import DigestError
        from mailer.newsletter.sending import run_digest
        from mailer.newsletter.subscribers import token_key

        async with self._lock:  # one digest run at a time
            try:
                summary = await run_digest(self.config, period=period, clock=self.clock,
                                           key=token_key(self.config), compose=compose,
                                           stopping=self._stopping, signer=self.signer)
            except DigestError as exc:
                log.error("digest %s: %s", period or "(resume)", exc)
                return
            except Exception:  # noqa: BLE001 - keep the scheduler alive; the period is retried on restart
                log.exception("digest run for %s failed", period or "(resume)")
                return
            if summary.digest_id is not None or period is not None:
                self.runs.append(summary)

    async def stop(self) -> None:
        """Stop firing; a run in progress finishes the copies in hand and stops (resumed on restart)."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._stopping.set()
        if self._tasks:
            done, running = await asyncio.wait(list(self._tasks), timeout=self.config.delivery.timeout + 5)
            for task in running:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
