"""``mailer threads``: read, search, answer, file and export archived threads."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from pathlib import Path

import click

from mailer import desk
from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_json, emit_table, local_time
from mailer.clock import system_clock
from mailer.outbound.templating import template_environment
from mailer.store import archive


@click.group()
def threads() -> None:
    """Read, search, answer, file and export archived threads."""


@threads.command("list")
@click.option("--urgent", is_flag=True, help="Only threads flagged urgent.")
@click.option("--status", type=click.Choice(archive.THREAD_STATUSES), help="Only threads in this status.")
@click.option("--since", metavar="DATE", help="Only threads active on or after DATE (YYYY-MM-DD).")
@click.option("--all", "everything", is_flag=True,
              help="Also threads without a reader's letter (digests, confirmations, bounces).")
@click.option("--limit", default=100, show_default=True, help="How many threads at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_(context: Context, urgent: bool, status: str | None, since: str | None, everything: bool,
          limit: int, as_json: bool) -> None:
    """List threads: urgent first, then new, newest activity first."""
    if since is not None:
        since = _day(since, "--since")
    rows = desk.list_threads(
        context.readonly_db, status=status, urgent=True if urgent else None, since=since,
        letters_only=not everything, limit=limit,
    )
    if as_json:
        emit_json(rows)
        return
    for letter in desk.arriving(context.readonly_db):
        # Received and safe, not parsed yet: sender and subject from a header scan.
        click.echo(f"arriving  #{letter['id']}  {letter['received_at']}  "
                   f"{letter['from_addr'] or letter['mail_from'] or '(unknown sender)'}  {letter['subject']}", err=True)
    for row in rows:
        row["flag"] = "URGENT" if row["urgent"] else ""
        row["last_message_at"] = local_time(row["last_message_at"], context.config.column.zone)
    emit_table(rows, [("id", "ID"), ("flag", ""), ("status", "STATUS"),
                      ("last_message_at", "LAST"), ("message_count", "MSGS"),
                      ("correspondent", "READER"), ("subject", "SUBJECT")])


def _day(text: str, option: str) -> str:
    try:
        return dt.date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise click.BadParameter(f"expected a date like 2026-11-26, got {text!r}", param_hint=option) from None


@threads.command("show")
@click.argument("thread_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def show(context: Context, thread_id: int, as_json: bool) -> None:
    """Show every message of a thread in order, inbound and outbound."""
    try:
        detail = desk.thread_detail(context.readonly_db, thread_id, token_key=_token_key(context))
    except desk.ThreadNotFound as exc:
        raise click.ClickException(str(exc)) from None
    thread, messages = detail["thread"], detail["messages"]
    if as_json:
        emit_json({"thread": thread, "messages": messages})
        return
    zone = context.config.column.zone
    flag = "  [URGENT]" if thread["urgent"] else ""
    click.echo(f"Thread {thread['id']}: {thread['subject']}  ({thread['status']}){flag}")
    for message in messages:
        inbound = message["direction"] == "inbound"
        arrow = "<<" if inbound else ">>"
        who = _sender(message) if inbound else f"to {message['correspondent']}"
        click.echo("")
        click.echo(f"{arrow} #{message['id']} {message['kind']}  {local_time(message['created_at'], zone)}  {who}")
        click.echo(f"   Subject: {message['subject']}")
        if message.get("decision"):
            click.echo(f"   Decision: {message['decision']}")
        if message["parse_error"]:
            click.echo(f"   (parse problem: {message['parse_error']})")
        if message["delivery"]:
            click.echo(f"   Delivery: {message['delivery']['status']}")
        for topic in message["topics"]:
            click.echo(f"   Topic: {topic['title']}  {topic['url']}")
        click.echo("")
        for line in (message["body_text"] or "").splitlines() or [""]:
            click.echo(f"   {line}")


def _token_key(context: Context) -> bytes | None:
    """The key that rebuilds digest copies, if it exists (a desk without a digest has none)."""
    from mailer.newsletter.subscribers import load_token_key

    path = context.config.subscribers.token_key_file
    try:
        return load_token_key(path) if path.exists() else None
    except ValueError:
        return None


def _sender(message: dict) -> str:
    if message["from_name"]:
        return f"{message['from_name']} <{message['from_addr']}>"
    return message["from_addr"] or message["mail_from"] or "(unknown sender)"


@threads.command("search")
@click.argument("query")
@click.option("--limit", default=50, show_default=True, help="How many matches at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (snippets with [brackets] around matches).")
@pass_context
def search(context: Context, query: str, limit: int, as_json: bool) -> None:
    """Full-text search of every message, best match first.

    QUERY is one or more words (all must match); "a phrase" in double quotes;
    OR and NOT between words; word* for a prefix; subject:word to look only
    in subjects (also body_text:, from_name:, from_addr:). Matches are
    highlighted (in [brackets] when the output is not a terminal).
    """
    try:
        result = desk.search(context.readonly_db, query, limit=limit)
    except archive.SearchSyntaxError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json([_search_json(row) for row in result.rows])
        return
    waiting = len(desk.arriving(context.readonly_db))
    if waiting:
        click.echo(f"({waiting} letter(s) arriving, not filed yet: search finds them once filed)", err=True)
    if result.literal:
        click.echo(f"(searched for the words literally: {result.query})", err=True)
    if result.ranked_newest:
        click.echo(f"(more than {result.ranked_newest:,} messages match: the best of the newest "
                   f"{result.ranked_newest:,} are shown; add a word to narrow the search)", err=True)
    if not result.rows:
        click.echo("(no matches)")
        return
    color = not click.utils.should_strip_ansi(sys.stdout)
    for row in result.rows:
        direction = "<<" if row["direction"] == "inbound" else ">>"
        who = row["from_name"] or row["from_addr"] if row["direction"] == "inbound" else f"to {row['correspondent']}"
        click.echo(f"thread {row['thread_id']}  {direction} #{row['id']} {row['kind']}  {local_time(row['created_at'], context.config.column.zone)[:10]}  {who}")
        click.echo(f"   {_marked(row['subject_parts'], color)}")
        click.echo(f"   {' '.join(_marked(row['parts'], color).split())}")
        click.echo("")


def _marked(parts, color: bool) -> str:
    if color:
        return "".join(click.style(text, bold=True, reverse=True) if hit else text for text, hit in parts)
    return "".join(f"[{text}]" if hit else text for text, hit in parts)


def _search_json(row: dict) -> dict:
    row = dict(row)
    row["snippet"] = _marked(row.pop("parts"), False)
    row["subject_highlighted"] = _marked(row.pop("subject_parts"), False)
    return row


@threads.command("export")
@click.argument("thread_id", type=int)
@click.option("--mbox", "mbox_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the thread to this mbox file (most mail clients can import it).")
@click.option("--eml", "eml_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one .eml file per message into this folder.")
@click.option("--force", is_flag=True, help="Replace an existing mbox file or .eml files.")
@pass_context
def export(context: Context, thread_id: int, mbox_path: Path | None, eml_dir: Path | None, force: bool) -> None:
    """Export a thread with the original bytes of every message."""
    if not mbox_path and not eml_dir:
        raise click.UsageError("say where to: --mbox FILE or --eml DIR (or both)")
    try:
        if mbox_path:
            if mbox_path.exists() and mbox_path.stat().st_size and not force:
                raise click.ClickException(f"{mbox_path} already exists (use --force to replace it)")
            if mbox_path.exists() and force:
                mbox_path.unlink()
            count = desk.export_mbox(context.readonly_db, thread_id, mbox_path, config=context.config)
            click.echo(f"Wrote {count} message(s) of thread {thread_id} to {mbox_path}")
        if eml_dir:
            files = desk.export_eml(context.readonly_db, thread_id, eml_dir, overwrite=force, config=context.config)
            click.echo(f"Wrote {len(files)} .eml file(s) of thread {thread_id} to {eml_dir}")
    except desk.DeskError as exc:
        raise click.ClickException(str(exc)) from None


#: Everything below this line in the editor is ignored (as in git commit messages).
SCISSORS = "# ------------------------ >8 ------------------------"


@threads.command("reply")
@click.argument("thread_id", type=int)
@click.option("--file", "text_file", type=click.File("r", encoding="utf-8"),
              help="Read the reply from this file ('-' for standard input) instead of an editor.")
@click.option("--yes", is_flag=True, help="Send without asking (editor replies ask first).")
@pass_context
def reply(context: Context, thread_id: int, text_file, yes: bool) -> None:
    """Answer a thread's latest letter, from a file or in your $EDITOR.

    The text is signed and threaded by the reply templates, archived in the
    thread and queued in the outbox (a running `mailer serve` delivers it);
    the thread becomes "answered". A warning is printed when the reply would
    go (by the letter's Reply-To) to someone other than the thread's reader.
    """
    config, db = context.config, context.db
    templates = template_environment(config.templates_override())
    try:
        detail = desk.thread_detail(db, thread_id)
    except desk.ThreadNotFound as exc:
        raise click.ClickException(str(exc)) from None
    if text_file is not None:
        text = text_file.read()
    else:
        text = _edit(detail)
        if text is None:
            raise click.ClickException("nothing written: no reply sent")
    if detail["reply_warning"]:
        click.echo(f"Warning: {detail['reply_warning']}", err=True)
    try:
        draft = desk.compose_reply(db, thread_id, text, config=config, templates=templates)
        if text_file is None and not yes:
            click.echo(draft.outgoing.body.text)
            click.confirm(f"Send this reply to {draft.recipient}?", abort=True)
        replied = desk.reply(db, thread_id, text, config=config, templates=templates, clock=system_clock)
    except desk.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"Reply to {replied.recipient} queued (message {replied.message_id}, outbox {replied.outbox_id}); "
        f"thread {thread_id} is now answered."
    )


def _edit(detail: dict) -> str | None:
    letter = detail["letter"] or {}
    lines = [desk.greeting(letter), "", "", "", SCISSORS,
             "# Write your reply above this line; everything below it is ignored.",
             f"# To: {detail['reply_to'] or '(nobody: this thread has no letter)'}",
             f"# Subject: {letter.get('subject', '')}", "#"]
    lines += [f"# > {line}" for line in (letter.get("body_text") or "").splitlines()[:80]]
    edited = click.edit("\n".join(lines) + "\n", extension=".txt")
    if edited is None:
        return None
    text = edited.split(SCISSORS)[0].strip()
    if not text or text == desk.greeting(letter):
        return None
    return text


@threads.command("mark")
@click.argument("thread_id", type=int)
@click.argument("status", type=click.Choice(archive.THREAD_STATUSES))
@pass_context
def mark(context: Context, thread_id: int, status: str) -> None:
    """Set a thread's status: new, answered or archived."""
    try:
        thread = desk.mark(context.db, thread_id, status)
    except desk.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Thread {thread_id} is now {thread['status']}.")


@threads.command("urgent")
@click.argument("thread_id", type=int)
@click.option("--by", default="", help="Who made the correction (default: the login name).")
@pass_context
def urgent(context: Context, thread_id: int, by: str) -> None:
    """Flag a thread urgent: the reader may be in crisis (kept as a labelled example)."""
    _label(context, thread_id, True, by)


@threads.command("not-urgent")
@click.argument("thread_id", type=int)
@click.option("--by", default="", help="Who made the correction (default: the login name).")
@pass_context
def not_urgent(context: Context, thread_id: int, by: str) -> None:
    """Clear a thread's urgent flag: no sign of crisis (kept as a labelled example)."""
    _label(context, thread_id, False, by)


def _label(context: Context, thread_id: int, is_urgent: bool, by: str) -> None:
    who = by or f"cli:{getpass.getuser()}"
    try:
        row = desk.label_thread(context.db, thread_id, is_urgent, by=who, clock=system_clock)
    except desk.DeskError as exc:
        raise click.ClickException(str(exc)) from None
    agreed = "agrees" if bool(row["detector_urgent"]) == is_urgent else "disagrees"
    click.echo(f"Thread {thread_id} is now {'urgent' if is_urgent else 'not urgent'} "
               f"(the detector {agreed}; kept as a labelled example).")
