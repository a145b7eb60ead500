"""``mailer outbox``: what is waiting to go out, what went, what failed."""

from __future__ import annotations

import click

from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_json, emit_table, local_time
from mailer.clock import system_clock
from mailer.outbound import outbox as outbox_queue


@click.group()
def outbox() -> None:
    """Inspect outgoing mail and requeue failures."""


@outbox.command("list")
@click.option("--status", type=click.Choice(outbox_queue.STATUSES), help="Only messages in this state.")
@click.option("--limit", default=200, show_default=True, help="How many at most, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_(context: Context, status: str | None, limit: int, as_json: bool) -> None:
    """List outgoing messages: pending, sent and failed, newest first."""
    rows = outbox_queue.list_outbox(context.readonly_db, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["to"] = ", ".join(row["rcpt_to"])
        row["when"] = local_time(row["sent_at"] or row["next_attempt_at"], context.config.column.zone)
    emit_table(rows, [("id", "ID"), ("status", "STATUS"), ("kind", "KIND"), ("attempts", "TRIES"),
                      ("when", "SENT/NEXT"), ("thread_id", "THREAD"), ("to", "TO"), ("last_error", "LAST ANSWER")])


@outbox.command("retry")
@click.argument("outbox_id", type=int)
@pass_context
def retry(context: Context, outbox_id: int) -> None:
    """Requeue a failed message so the running service tries it again now."""
    try:
        outbox_queue.retry(context.db, outbox_id, clock=system_clock)
    except KeyError:
        raise click.ClickException(f"no outbox message with id {outbox_id}") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"outbox message {outbox_id} requeued; `mailer serve` will deliver it shortly")
