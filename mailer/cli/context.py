"""What every command shares: the config file, loaded once, and the database."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

import click
import sqlite_utils

from mailer.config import Config, ConfigError, load_config
from mailer.store.db import BUSY_TIMEOUT_MS, DatabaseMissing, StorageError, open_database, open_readonly


class Context:
    """Lazily loads the config and opens the archive for a command."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._db: sqlite_utils.Database | None = None
        self._readonly_db: sqlite_utils.Database | None = None

    @property
    def config(self) -> Config:
        """The loaded configuration; a bad file ends the command with its error."""
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config

    @property
    def db(self) -> sqlite_utils.Database:
        """The archive, opened (and migrated) on first use."""
        if self._db is None:
            try:
                self._db = open_database(Path(self.config.storage.database))
            except StorageError as exc:
                raise click.ClickException(f"{exc} (storage.database)") from None
            click.get_current_context().call_on_close(self._db.close)
        return self._db

    @property
    def readonly_db(self) -> sqlite_utils.Database:
        """The archive opened for reading only, for commands that only look.

        It is never created, migrated or written: a missing file or a schema
        older than the program ends the command with an error saying so.
        """
        if self._readonly_db is None:
            try:
                self._readonly_db = open_readonly(Path(self.config.storage.database))
            except DatabaseMissing as exc:
                source = self.config.source
                read = f"from {source}" if source else "the default under the current folder: no --config, $MAILER_CONFIG or ./config.toml"
                raise click.ClickException(
                    f"{exc} (storage.database, {read}); nothing was created. "
                    "Check --config or $MAILER_CONFIG; `mailer serve` creates the database when it first starts."
                ) from None
            except StorageError as exc:
                raise click.ClickException(f"{exc} (storage.database)") from None
            click.get_current_context().call_on_close(self._readonly_db.close)
        return self._readonly_db


class ArchiveGroup(click.Group):
    """A command group that reports a busy or unusable archive in one line, not a traceback.

    While ``mailer serve`` holds the write lock (a long batch, a stuck disk),
    a command waits the busy timeout and then SQLite says "database is
    locked"; the columnist needs to know what happened and what to do.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise click.ClickException(
                "the archive is busy: another process (usually `mailer serve`) has held its write lock "
                f"for more than {BUSY_TIMEOUT_MS // 1000} s, so this command could not finish (a change is "
                "written whole or not at all); try again in a moment, and if it keeps happening check /healthz"
            ) from None
        except StorageError as exc:
            raise click.ClickException(f"{exc} (storage.database)") from None


def pass_context(fn):
    """Decorator: hand the command our Context as its first argument."""

    @click.pass_obj
    @functools.wraps(fn)
    def wrapper(context: Context, *args, **kwargs):
        return fn(context, *args, **kwargs)

    return wrapper
