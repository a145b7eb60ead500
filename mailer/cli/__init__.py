"""The ``mailer`` command line.

Each concern has its own module of commands; this one holds the group, the
shared ``--config`` option and ``serve``. Commands get the loaded Config and
an open database from :class:`Context`, never by reading files themselves.
"""

from __future__ import annotations

import asyncio
import sys

import click

from mailer import logs
from mailer.cli.context import ArchiveGroup, Context, pass_context
from mailer.config import ConfigError, LoggingConfig, load_config


@click.group(cls=ArchiveGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="Config file (default: $MAILER_CONFIG, else ./config.toml, else built-in defaults).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details too.")
@click.version_option(package_name="mailer")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """mailer: the mail desk of a self-therapy column.

    Receives readers' letters over SMTP, keeps every message in a SQLite
    archive, acknowledges letters, sends the weekly digest, and lets the
    columnist review and answer threads.
    """
    context = Context(config_path)
    try:
        settings = context.config.logging
    except click.ClickException:
        # A bad config file: log in the default format; the command that
        # needs the config reports the error (commands that do not, still run).
        settings = LoggingConfig()
    # One handler on the root logger, so aiosmtpd's, uvicorn's and
    # APScheduler's lines come out in the same format as ours (mailer/logs.py;
    # it also keeps aiosmtpd's DEBUG, which would log letter text, off).
    logs.setup(settings.format, settings.level, verbose=verbose, stream=sys.stderr)
    ctx.obj = context


@main.command()
@pass_context
def serve(context: Context) -> None:
    """Run the SMTP listener and its workers until SIGTERM or Ctrl-C."""
    from mailer.app.service import Service

    config = context.config
    try:
        asyncio.run(Service(config).run_until_signalled())
    except ConfigError as exc:  # found at startup: TLS files, relay password, DKIM key
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. a folder for the archive or the Maildir that cannot be made
        raise click.ClickException(f"cannot start: {exc}") from None


def _register() -> None:
    # Imported here, after ``main`` exists, because each module adds to it.
    from mailer.cli import demo, desk, digest, dkim, outbox, status, subscribers, threads, topics

    for command in (threads.threads, outbox.outbox, subscribers.subscribers, digest.digest, desk.forget,
                    desk.desk_group, topics.topics, demo.demo, status.status, dkim.dkim):
        main.add_command(command)


_register()

__all__ = ["main", "ConfigError", "load_config"]
