"""What every command shares: the config file, loaded once, and the database."""

from __future__ import annotations

import functools
from pathlib import Path

import click
import sqlite_utils

from ..config import Config, ConfigError, load_config
from ..db import StorageError, open_database


class Context:
    """Lazily loads the config and opens the archive for a command."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._db: sqlite_utils.Database | None = None

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


def pass_context(fn):
    """Decorator: hand the command our Context as its first argument."""

    @click.pass_obj
    @functools.wraps(fn)
    def wrapper(context: Context, *args, **kwargs):
        return fn(context, *args, **kwargs)

    return wrapper
