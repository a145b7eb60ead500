"""``mailer topics``: the column's published topics, and which ones a letter gets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from mailer import topics as catalog
from mailer.cli.context import Context, pass_context
from mailer.cli.output import emit_json, emit_table
from mailer.clock import system_clock
from mailer.store.parsing import parse_message


@click.group()
def topics() -> None:
    """The column's published topics: import them, list them, match a letter."""


@topics.command("import")
@click.argument("source", metavar="PATH_OR_URL")
@click.option("--if-empty", is_flag=True,
              help="Do nothing if the archive already has topics (how `make run` seeds a new archive).")
@pass_context
def import_(context: Context, source: str, if_empty: bool) -> None:
    """Import topics from a catalog, Markdown or an RSS/Atom feed.

    PATH_OR_URL is a .toml catalog of [[topic]] tables, a Markdown file (or a
    folder of them) with front matter, or a feed: a .xml/.rss/.atom file or an
    http(s) URL. Importing again updates topics in place, by slug. Entries
    with problems are listed and skipped; the rest are imported, and the
    command then exits with status 1.
    """
    if if_empty and catalog.list_topics(context.db):
        click.echo("topics already imported; nothing to do (--if-empty)")
        return
    try:
        found, problems = catalog.load_catalog(source)
    except catalog.TopicImportError as exc:
        raise click.ClickException(str(exc)) from None
    counts = catalog.import_topics(
        context.db, found, clock=system_clock, source=source, partial=catalog.is_feed(source)
    )
    for problem in problems:
        click.echo(f"skipped: {problem}", err=True)
    summary = f"{counts['added']} added, {counts['updated']} updated, {counts['unchanged']} unchanged"
    if problems:
        summary += f"; {len(problems)} problem{'s' if len(problems) != 1 else ''} (see above)"
    click.echo(summary)
    if problems:
        click.get_current_context().exit(1)


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_(context: Context, as_json: bool) -> None:
    """List every topic, newest first; starters are marked."""
    rows = catalog.list_topics(context.readonly_db)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["flag"] = "starter" if row["starter"] else ""
    emit_table(rows, [("published", "PUBLISHED"), ("flag", ""), ("slug", "SLUG"),
                      ("title", "TITLE")])


@topics.command("match")
@click.argument("eml", metavar="FILE.eml", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=int, default=None,
              help="How many topics (default: acknowledgements.topics_per_letter).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def match(context: Context, eml: str, limit: int | None, as_json: bool) -> None:
    """Show which topics a letter would be sent, best first, with scores."""
    if limit is None:
        limit = context.config.acknowledgements.topics_per_letter
    try:
        raw = Path(eml).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {eml}: {exc.strerror or exc}") from None
    letter = parse_message(raw)
    found, fell_back = catalog.topics_for_letter(
        context.db, letter.subject, letter.body_text, limit=limit
    )
    if as_json:
        emit_json({
            "subject": letter.subject,
            "fell_back_to_starters": fell_back,
            "min_score": catalog.MIN_SCORE,
            "topics": [dataclasses.asdict(m) for m in found],
        })
        return
    click.echo(f"Letter: {letter.subject or '(no subject)'}")
    if letter.error:
        click.echo(f"(the letter was only partly readable: {letter.error})")
    if fell_back:
        click.echo(f"No topic scored {catalog.MIN_SCORE} or more: these are the column's starter topics.")
    rows = []
    for rank, m in enumerate(found, start=1):
        note = "starter" if m.starter and m.score < catalog.MIN_SCORE else ""
        rows.append({"rank": rank, "score": f"{m.score:.2f}", "note": note,
                     "slug": m.slug, "title": m.title})
    emit_table(rows, [("rank", "#"), ("score", "SCORE"), ("note", ""), ("slug", "SLUG"),
                      ("title", "TITLE")])


# -- a topic drafted from a letter (the command lives with the desk's) --
from mailer.cli.desk import topic_draft as _topic_draft  # noqa: E402

topics.add_command(_topic_draft, "draft")


@topics.command("refresh")
@pass_context
def refresh(context: Context) -> None:
    """Check the column's feed ([topics] feed_url) now and import its new pieces.

    The same check `mailer serve` runs on schedules/topics_feed.toml and just
    before each digest: a conditional GET (nothing is downloaded when the feed
    has not changed). Exits with status 1 when the check fails.
    """
    from mailer.topics.feed import refresh_feed

    url = context.config.topics.feed_url
    if not url:
        raise click.ClickException(
            "no feed to check: set [topics] feed_url in the config (or use `mailer topics import PATH_OR_URL`)")
    check = refresh_feed(context.db, url, clock=system_clock, timeout=context.config.topics.feed_timeout)
    click.echo(check.line())
    if check.status == "failed":
        raise SystemExit(1)
