"""``mailer status``: is the column's mail desk up, and how is it doing?"""

from __future__ import annotations

import datetime as dt

import click

from mailer.app import status as facts
from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_json
from mailer.clock import parse_iso, system_clock


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys in docs/operations.md).")
@pass_context
def status(context: Context, as_json: bool) -> None:
    """How the mail desk is doing: addresses, letters, outbox, digests, subscribers, disk.

    Shows the listener and web addresses and whether anything answers there
    right now, letters today and this week, the outbox's pending and failed
    messages, the last and next digest, subscribers by state, and the
    database size (main file and write-ahead log).

    "Today" and "this week" are in the column's timezone (column.timezone); a
    week starts on Monday. It only reads: safe to run while `mailer serve`
    runs, and it never creates or migrates the database (a missing one, or
    one waiting for a migration, is an error that says so).
    """
    config = context.config
    data = facts.gather(config, context.readonly_db, clock=system_clock)
    if as_json:
        emit_json(data)
        return
    for label, text in human_lines(data, config.column.zone):
        click.echo(f"{label:<13}{text}".rstrip())


def _when(stamp: str | None, zone: dt.tzinfo) -> str:
    if not stamp:
        return "-"
    return parse_iso(stamp).astimezone(zone).strftime("%a %d %b %Y %H:%M")


def _answer(value: bool | None) -> str:
    return {True: "answering", False: "NOT ANSWERING", None: "(port 0: not checked)"}[value]


def _bytes(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def human_lines(data: dict, zone: dt.tzinfo) -> list[tuple[str, str]]:
    """The status as (label, text) rows for a person; times in the column's timezone."""
    listener, web, letters = data["listener"], data["web"], data["letters"]
    box, digest, db = data["outbox"], data["digest"], data["database"]
    lines = [("now", f"{_when(data['generated_at'], zone)} {data['timezone']} (times below in it; weeks start Monday)"),
             ("listener", f"smtp {listener['address']}  {_answer(listener['answering'])}")]
    if web["enabled"]:
        lines.append(("web", f"http {web['address']}  {_answer(web['answering'])}"))
    else:
        lines.append(("web", "disabled (web.enabled = false)"))
    lines.append(("letters", f"today {letters['today']}, this week {letters['this_week']} "
                             f"(the week began {_when(letters['week_since'], zone)})"))
    filing = data["filing"]
    if filing["count"]:
        lines.append(("filing", f"{filing['count']} letter(s) received, waiting to be filed; "
                                f"the oldest for {filing['oldest_age_seconds']:.0f} s"))
    else:
        lines.append(("filing", "every letter received is filed"))
    pipeline = data["pipeline"]
    if pipeline["worker"] == "thread":
        lines.append(("pipeline", "in the service's process (pipeline.worker = \"thread\")"))
    else:
        lines.append(("pipeline", "worker process " + ("running" if pipeline["worker_running"] else "not running")))
    outbox_text = f"pending {box['pending']}, failed {box['failed']}"
    if box["next_attempt_at"]:
        outbox_text += f" (next attempt {_when(box['next_attempt_at'], zone)})"
    if box["failed"]:
        outbox_text += "  - see `mailer outbox list --status failed`"
    lines.append(("outbox", outbox_text))
    last = digest["last"]
    if last:
        lines.append(("last digest", f"#{last['id']} {last['status']}, {_when(last['created_at'], zone)}: "
                                     f"{last['sent']} sent, {last['not_sent']} not sent ({last['period']})"))
    else:
        lines.append(("last digest", "none yet"))
    if digest["error"]:
        lines.append(("next digest", f"schedule error: {digest['error']}"))
    elif digest["next"]:
        lines.append(("next digest", f"{_when(digest['next']['at'], zone)} ({digest['next']['schedule']})"))
    else:
        lines.append(("next digest", "not scheduled (no schedule files; `mailer digest send` by hand)"))
    feed = data.get("topics_feed") or {}
    if not feed.get("url"):
        lines.append(("topics feed", "none ([topics] feed_url not set; `mailer topics import` by hand)"))
    elif feed.get("error"):
        lines.append(("topics feed", f"FAILED at {_when(feed['checked_at'], zone)}: {feed['error']} "
                                     f"(last good check {_when(feed['ok_at'], zone)}; digests use the topics known)"))
    elif feed.get("checked_at"):
        lines.append(("topics feed", f"{feed['url']} checked {_when(feed['checked_at'], zone)}"))
    else:
        lines.append(("topics feed", f"{feed['url']} not checked yet"))
    lines.append(("subscribers", ", ".join(f"{state} {n}" for state, n in data["subscribers"].items())))
    lines.append(("database", f"{db['path']}  {_bytes(db['bytes'])} "
                              f"(main {_bytes(db['main_bytes'])} + WAL {_bytes(db['wal_bytes'])})"))
    return lines
