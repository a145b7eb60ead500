"""The ``mailer`` command line.

Each concern has its own module of commands; this one holds the group, the
shared ``--config`` option and ``serve``. Commands get the loaded Config and
an open database from :class:`Context`, never by reading files themselves.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from ..config import ConfigError, load_config
from .context import Context, pass_context


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosmtpd logs every command at INFO and every DATA line at DEBUG. Our
    # listener already writes the one line per message an operator needs, and
    # letter text must never reach a log, so its DEBUG is never switched on.
    logging.getLogger("mail.log").setLevel(logging.INFO if verbose else logging.WARNING)
    ctx.obj = Context(config_path)


@main.command()
@pass_context
def serve(context: Context) -> None:
    """Run the SMTP listener and its workers until SIGTERM or Ctrl-C."""
    from ..service import Service

    config = context.config
    try:
        asyncio.run(Service(config).run_until_signalled())
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {config.smtp.host}:{config.smtp.port} (smtp.host/smtp.port): {exc}"
        ) from None


def _register() -> None:
    from . import desk, outbox, threads

    main.add_command(threads.threads)
    main.add_command(outbox.outbox)
    # -- issue 4: subscribers and the digest --
    from . import digest, subscribers

    main.add_command(subscribers.subscribers)
    main.add_command(digest.digest)
    # -- end issue 4 --
    main.add_command(desk.forget)
    main.add_command(desk.desk_group)
    from . import topics

    main.add_command(topics.topics)
    from . import demo

    main.add_command(demo.demo)


_register()

__all__ = ["main", "ConfigError", "load_config"]
