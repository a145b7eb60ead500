"""``mailer demo``: the newcomer's tour of the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run in this folder (default: a new temporary folder, left behind to look at).")
def demo(folder: Path | None) -> None:
    """Watch one letter go through mailer: received, archived, acknowledged, digested.

    Imports examples/topics.toml, starts the service on a free port, sends
    examples/letter.eml over SMTP, shows the acknowledgement with its topic
    links, the archived thread and a digest preview, then stops and prints
    where every file is. Ignores --config: it uses a folder of its own.
    """
    from rich.console import Console

    from mailer.app.demo import DemoError, run_demo

    try:
        run_demo(Console(highlight=False), folder=folder)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
