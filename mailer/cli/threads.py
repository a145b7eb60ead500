"""``mailer threads``: read and search the archive from the command line."""

from __future__ import annotations

import json

import click

from .. import archive
from .context import Context, pass_context
from .output import emit_json, emit_table


@click.group()
def threads() -> None:
    """Review archived threads: list, show and search."""


@threads.command("list")
@click.option("--urgent", is_flag=True, help="Only threads flagged urgent.")
@click.option("--status", type=click.Choice(archive.THREAD_STATUSES), help="Only threads in this status.")
@click.option("--since", metavar="DATE", help="Only threads active on or after DATE (YYYY-MM-DD).")
@click.option("--limit", default=100, show_default=True, help="How many threads at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_(context: Context, urgent: bool, status: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """List threads: urgent first, then new, newest activity first."""
    rows = archive.list_threads(
        context.db, status=status, urgent=True if urgent else None, since=since, limit=limit
    )
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["flag"] = "URGENT" if row["urgent"] else ""
    emit_table(rows, [("id", "ID"), ("flag", ""), ("status", "STATUS"),
                      ("last_message_at", "LAST"), ("message_count", "MSGS"),
                      ("correspondent", "READER"), ("subject", "SUBJECT")])


@threads.command("show")
@click.argument("thread_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def show(context: Context, thread_id: int, as_json: bool) -> None:
    """Show every message of a thread in order, inbound and outbound."""
    thread = archive.get_thread(context.db, thread_id)
    if thread is None:
        raise click.ClickException(f"no thread with id {thread_id}")
    messages = archive.thread_messages(context.db, thread_id)
    if as_json:
        for message in messages:
            for key in ("rcpt_to", "to_addrs", "references_ids", "attachments", "headers", "meta"):
                message[key] = json.loads(message[key])
        emit_json({"thread": thread, "messages": messages})
        return
    flag = "  [URGENT]" if thread["urgent"] else ""
    click.echo(f"Thread {thread['id']}: {thread['subject']}  ({thread['status']}){flag}")
    for message in messages:
        arrow = "<<" if message["direction"] == "inbound" else ">>"
        who = message["from_addr"] if message["direction"] == "inbound" else message["correspondent"]
        click.echo("")
        click.echo(f"{arrow} #{message['id']} {message['kind']}  {message['created_at']}  {who}")
        click.echo(f"   Subject: {message['subject']}")
        if message["parse_error"]:
            click.echo(f"   (parse problem: {message['parse_error']})")
        click.echo("")
        for line in (message["body_text"] or "").splitlines() or [""]:
            click.echo(f"   {line}")


@threads.command("search")
@click.argument("query")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def search(context: Context, query: str, limit: int, as_json: bool) -> None:
    """Full-text search of every message; matches are shown in [brackets]."""
    try:
        rows = archive.search(context.db, query, limit=limit)
    except archive.SearchSyntaxError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(rows)
        return
    emit_table(rows, [("thread_id", "THREAD"), ("id", "MSG"), ("kind", "KIND"),
                      ("created_at", "DATE"), ("subject", "SUBJECT"), ("snippet", "SNIPPET")])
