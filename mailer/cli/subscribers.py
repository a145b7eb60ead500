"""``mailer subscribers``: who gets the weekly digest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_json, emit_table, local_time
from mailer.clock import system_clock
from mailer.newsletter import subscribers as subs
from mailer.outbound.templating import template_environment


@click.group()
def subscribers() -> None:
    """Manage digest subscribers: add, remove, list, import and export."""


@subscribers.command("add")
@click.argument("email")
@click.option("--confirmed", is_flag=True,
              help="They already agreed elsewhere: subscribe at once, send no confirmation.")
@pass_context
def add(context: Context, email: str, confirmed: bool) -> None:
    """Subscribe EMAIL (sends a confirmation unless --confirmed)."""
    config = context.config
    try:
        if confirmed:
            row, changed = subs.add_confirmed(context.db, email, clock=system_clock, source="cli")
            click.echo(f"{row['email']}: {'subscribed (confirmed)' if changed else 'already subscribed'}")
            return
        result = subs.request_subscription(
            context.db, email, config=config, clock=system_clock, source="cli",
            templates=template_environment(config.templates_override()),
        )
    except subs.InvalidAddress as exc:
        raise click.ClickException(f"{email!r}: {exc}") from None
    address = subs.normalize_email(email)
    if result.sent:
        click.echo(f"{address}: pending; confirmation queued (outbox {result.outbox_id}); {_where(config)}")
    else:
        click.echo(f"{address}: {result.disposition}")


def _where(config) -> str:
    """Where `mailer serve` delivers the confirmation, so a newcomer can find its link."""
    delivery = config.delivery
    if delivery.mode == "maildir":
        return (f"`mailer serve` delivers it to the Maildir {delivery.maildir}/new/ "
                "(delivery.mode = \"maildir\"); its link confirms, or reply to it")
    return f"`mailer serve` hands it to the relay {delivery.relay_host}:{delivery.relay_port}"


@subscribers.command("remove")
@click.argument("email")
@pass_context
def remove(context: Context, email: str) -> None:
    """Unsubscribe EMAIL at once (their mail stays in the archive)."""
    try:
        changed = subs.remove(context.db, email, clock=system_clock)
    except subs.InvalidAddress as exc:
        raise click.ClickException(f"{email!r}: {exc}") from None
    except subs.UnknownSubscriber:
        raise click.ClickException(f"{email} is not a subscriber") from None
    click.echo(f"{subs.normalize_email(email)}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers.command("list")
@click.option("--status", type=click.Choice(subs.STATUSES), help="Only subscribers in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_(context: Context, status: str | None, as_json: bool) -> None:
    """List subscribers with their state (pending, confirmed, unsubscribed, suspended)."""
    rows = list(subs.iter_subscribers(context.readonly_db, status=status))
    if as_json:
        emit_json(rows)
        return
    for row in rows:  # times in the column's zone, as in the desk
        row["confirmed_at"] = local_time(row["confirmed_at"], context.config.column.zone) if row["confirmed_at"] else ""
    emit_table(rows, [("id", "ID"), ("email", "EMAIL"), ("status", "STATUS"), ("confirmed_at", "CONFIRMED"),
                      ("hard_bounces", "BOUNCES"), ("note", "NOTE")])
    counts = subs.counts(context.readonly_db)
    click.echo("  ".join(f"{name}: {n}" for name, n in counts.items()), err=True)


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--confirmed", is_flag=True,
              help="They already agreed elsewhere: subscribe at once, send no confirmations.")
@pass_context
def import_(context: Context, csv_file: str, confirmed: bool) -> None:
    """Import addresses from CSV_FILE (an 'email' column, or the first column).

    Bad rows are reported by line number; the good rows are imported anyway.
    """
    config = context.config
    handle = sys.stdin if csv_file == "-" else open(csv_file, newline="", encoding="utf-8-sig")
    try:
        report = subs.import_rows(
            context.db, handle, confirmed=confirmed, clock=system_clock, config=config,
            templates=template_environment(config.templates_override()),
        )
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{csv_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    finally:
        if handle is not sys.stdin:
            handle.close()
    for problem in report.problems:
        click.echo(f"{csv_file}: {problem}", err=True)
    summary = f"added {report.added}, unchanged {report.unchanged}"
    if confirmed:
        summary += f", confirmed again {report.reconfirmed}"
    else:
        summary += f", confirmations queued {report.confirmations}"
    click.echo(f"{summary}; {len(report.problems)} bad row(s) skipped")


@subscribers.command("export")
@click.argument("csv_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--status", type=click.Choice(subs.STATUSES), help="Only subscribers in this state.")
@pass_context
def export(context: Context, csv_file: str, status: str | None) -> None:
    """Write every subscriber to CSV_FILE ('-' for standard output)."""
    if csv_file == "-":
        subs.export_rows(context.readonly_db, sys.stdout, status=status)
        return
    with open(Path(csv_file), "w", newline="", encoding="utf-8") as handle:
        n = subs.export_rows(context.readonly_db, handle, status=status)
    click.echo(f"wrote {n} subscriber(s) to {csv_file}")
