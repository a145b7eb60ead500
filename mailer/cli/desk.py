"""``mailer forget``, ``mailer desk`` and ``mailer topics draft``: the desk's other commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailer import desk
from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_json
from mailer.clock import system_clock


@click.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for other readers before the erasure is reported incomplete.")
@pass_context
def forget(context: Context, email: str, yes: bool, dry_run: bool, as_json: bool, wait_seconds: float) -> None:
    """Erase everything of one correspondent, for good.

    Their letters and the column's replies (with the original bytes and
    their full-text index entries), their threads, outbox rows, and any
    subscriber records: every row of every table that holds the address.
    Readers are entitled to this. It cannot be undone. If another program
    holds the archive open, old copies can stay in the write-ahead log: the
    command then says the erasure is incomplete and exits with status 1.
    """
    db, config = context.db, context.config
    protected = config.own_addresses()
    try:
        plan = desk.forget(db, email, dry_run=True, protected=protected)
    except desk.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        _report(plan, as_json)
        return
    if plan.total and not yes:
        _report(plan, False, heading=f"This will permanently erase, for {plan.address}:")
        click.confirm("Erase all of it?", abort=True, err=True)
    if plan.total:
        report = desk.forget(db, email, protected=protected)
    else:
        report, plan.dry_run = plan, False
    _report(report, as_json)
    # Always, even when nothing is left: running forget again finishes an
    # erasure that an earlier run could not flush out of the WAL.
    try:
        desk.flush_write_ahead_log(db, deadline_seconds=wait_seconds)
    except desk.ErasureIncomplete as exc:
        raise click.ClickException(str(exc)) from None


def _report(report: desk.ForgetReport, as_json: bool, heading: str | None = None) -> None:
    if as_json:
        emit_json({"address": report.address, "dry_run": report.dry_run, "removed": report.removed,
                   "threads_emptied": report.threads_emptied, "mentions": report.mentions})
        return
    if not report.total:
        click.echo(f"Nothing in the archive belongs to {report.address}.")
    else:
        if heading is None:
            verb = "Would remove" if report.dry_run else "Removed"
            heading = f"{verb}, for {report.address}:"
        click.echo(heading)
        for table, count in sorted(report.removed.items()):
            click.echo(f"  {table:<16} {count:>6} row(s)")
    if report.mentions:
        click.echo("Still mentioned in the text of other people's rows (review them by hand):")
        for table, ids in report.mentions.items():
            what = "thread(s)" if table == "messages" else "row(s)"
            click.echo(f"  {table}: {what} {', '.join(str(i) for i in ids)}")
    if not report.dry_run and report.total:
        click.echo("Copies outside the archive (the delivery Maildir, backups, the relay's logs) are not touched.")


@click.group("desk")
def desk_group() -> None:
    """The web desk: its password."""


@desk_group.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input (one line).")
def hash_password(from_stdin: bool) -> None:
    """Make a password hash for [web] password_hash in the config file."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Desk password", hide_input=True, confirmation_prompt=True, err=True)
    if len(password) < 8:
        raise click.ClickException("choose a password of at least 8 characters")
    click.echo(f'password_hash = "{desk.hash_password(password)}"')
    click.echo("Put this line in the [web] section of your config file and restart `mailer serve`.", err=True)


@click.command("draft")
@click.argument("thread_id", type=int)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the draft to this file instead of printing it.")
@pass_context
def topic_draft(context: Context, thread_id: int, output: Path | None) -> None:
    """Draft a topic from a thread's letter, identifying details removed.

    Prints Markdown with front matter for `mailer topics import` (or writes
    it to --output). The reader's name, email and web addresses, phone
    numbers and street addresses are replaced with [name], [email], [link],
    [phone] and [address]; the summary is left empty on purpose, so the
    draft cannot be imported before someone has read it.
    """
    try:
        text = desk.topic_draft(context.db, thread_id, config=context.config, clock=system_clock)
    except desk.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists():
        raise click.ClickException(f"{output} already exists; choose another name")
    output.write_text(text, encoding="utf-8")
    click.echo(f"Wrote the draft to {output}; read it, write the summary, then `mailer topics import {output}`.")
