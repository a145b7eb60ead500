"""``mailer digest``: preview the next weekly digest, or send it now."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_table, local_time
from mailer.clock import system_clock
from mailer.config import ConfigError
from mailer.newsletter import digest as digests
from mailer.newsletter import sending
from mailer.newsletter.subscribers import token_key
from mailer.outbound.templating import template_environment


@click.group()
def digest() -> None:
    """Preview, send and inspect the weekly "Enjoy Your Changes!" digest."""


def _since(value: str | None) -> str | None:
    if value is None:
        return None
    import datetime as dt

    try:
        return dt.date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise click.BadParameter(f"expected a date like 2026-11-02, got {value!r}", param_hint="--since") from None


SINCE_HELP = "List the topics published on or after DATE (YYYY-MM-DD) instead of those new since the last digest."


@digest.command("preview")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write the HTML version to this file ('-': to standard output, instead of the text).")
@click.option("--to", "to_email", metavar="EMAIL", help="Render this subscriber's own copy (their working unsubscribe link).")
@click.option("--since", "since", metavar="DATE", help=SINCE_HELP)
@pass_context
def preview(context: Context, html_file: str | None, to_email: str | None, since: str | None) -> None:
    """Show the next digest as a subscriber would get it, without sending or recording anything."""
    from mailer.newsletter import subscribers as subs

    config = context.config
    subscriber = None
    if to_email:
        try:
            subscriber = subs.get_subscriber(context.db, subs.normalize_email(to_email))
        except subs.InvalidAddress as exc:
            raise click.ClickException(f"--to {to_email!r}: {exc}") from None
        if subscriber is None:
            raise click.ClickException(f"--to {to_email}: not a subscriber (see `mailer subscribers list`)")
    result = digests.preview(
        context.db, config=config, templates=template_environment(config.templates_override()),
        clock=system_clock, key=token_key(config), since=_since(since), to=subscriber,
    )
    if isinstance(result, str):
        click.echo(result)
        return
    if html_file == "-":
        click.echo(result.html or "")
        return
    click.echo(f"Subject: {result.subject}")
    click.echo(f"To: {subscriber['email'] if subscriber else digests.SAMPLE_READER + ' (a sample reader; --to EMAIL for a real copy)'}")
    click.echo(f"Topics published since {result.since[:10]}: {len(result.topics)}")
    click.echo("")
    click.echo(result.text)
    if html_file:
        Path(html_file).write_text(result.html or "", encoding="utf-8")
        click.echo(f"(HTML version written to {html_file})", err=True)


@digest.command("send")
@click.option("--quiet", is_flag=True, help="No progress bar, only the summary.")
@click.option("--since", "since", metavar="DATE", help=SINCE_HELP)
@click.option("--test", "test_email", metavar="EMAIL",
              help="Send one copy to EMAIL (yourself) only; nothing is recorded and the digest still goes out as usual.")
@pass_context
def send(context: Context, quiet: bool, since: str | None, test_email: str | None) -> None:
    """Send the digest now (or finish one a stopped run left unfinished).

    Subscribers who already have this digest never get a second copy. With
    --test EMAIL, one copy goes to EMAIL and no period is marked sent.
    """
    if test_email:
        try:
            answer = asyncio.run(sending.send_test_copy(context.config, test_email, clock=system_clock,
                                                        key=token_key(context.config), since=_since(since)))
        except (digests.DigestError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a relay that refuses: say so, plainly
            raise click.ClickException(f"the test copy to {test_email} was not sent: {exc}") from None
        click.echo(f"test copy sent to {test_email} ({answer}); nothing recorded, no period marked sent")
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    config = context.config
    context.db  # migrate the archive before the run opens its own connections
    progress = Progress(
        TextColumn("[bold]digest[/bold] {task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=quiet, transient=False,
    )
    state = {"task": None, "sent": 0, "failed": 0, "other": 0}

    def on_start(found: digests.Digest, remaining: int) -> None:
        state["task"] = progress.add_task("send", total=remaining, label=f"{found.id}", counts="")

    def on_progress(event: str, n: int) -> None:
        key = event if event in ("sent", "failed") else "other"
        state[key] += n
        if state["task"] is not None:
            progress.update(state["task"], advance=n,
                            counts=f"sent {state['sent']} failed {state['failed']} other {state['other']}")

    try:
        with progress:
            summary = asyncio.run(sending.run_digest(
                config, clock=system_clock, key=token_key(config), progress=on_progress, on_start=on_start,
                since=_since(since),
            ))
    except (digests.DigestError, ConfigError) as exc:  # ConfigError: relay password or CA file
        raise click.ClickException(str(exc)) from None
    if summary.digest_id is None:
        click.echo(summary.reason)
        return
    for failure in summary.failures[:20]:
        click.echo(f"failed: {failure}", err=True)
    click.echo(f"digest {summary.digest_id}: {summary.line()}")
    if not summary.finished:
        click.echo("not finished: run `mailer digest send` again later to retry the deferred copies")


@digest.command("list")
@click.option("--limit", default=20, show_default=True, help="How many digests at most, newest first.")
@pass_context
def list_(context: Context, limit: int) -> None:
    """List digests: period, state, topics, and how many copies went."""
    rows = digests.list_digests(context.readonly_db, limit=limit)
    for row in rows:  # times in the column's zone, as in the desk
        row["created_at"] = local_time(row["created_at"], context.config.column.zone)
        row["finished_at"] = local_time(row["finished_at"], context.config.column.zone) if row["finished_at"] else ""
    emit_table(rows, [("id", "ID"), ("status", "STATUS"), ("period", "PERIOD"), ("topics", "TOPICS"),
                      ("sent", "SENT"), ("other", "NOT SENT"), ("created_at", "COMPOSED"), ("finished_at", "FINISHED")])


@digest.command("raw")
@click.argument("message_id", type=int)
@pass_context
def raw(context: Context, message_id: int) -> None:
    """Print the exact bytes of an archived digest copy (by archive message id)."""
    try:
        data = digests.archived_bytes(context.readonly_db, message_id, token_key(context.config))
    except KeyError:
        raise click.ClickException(f"message {message_id} is not an archived digest copy") from None
    except digests.DigestError as exc:
        raise click.ClickException(str(exc)) from None
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
