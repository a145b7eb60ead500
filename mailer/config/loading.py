"""Reading the configuration: TOML into the section dataclasses, every problem naming its key."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from pathlib import Path

from mailer.config import sections as _sections
from mailer.config.checks import validate
from mailer.config.sections import DEFAULT_FILE, ENV_VAR, Config, ConfigError

_SECTION_TYPES = {
    f.name: f.type for f in dataclasses.fields(Config) if f.name not in ("base_dir", "source")
}


def load_config(path: str | os.PathLike | None = None, *, environ=None) -> Config:
    """Load the configuration the CLI would use.

    Precedence: an explicit ``path``; else ``$MAILER_CONFIG``; else
    ``./config.toml`` when it exists; else the embedded defaults (relative
    paths under the current folder). A path that was asked for explicitly but
    does not exist is an error, never a silent fallback.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_VAR):
        path = environ[ENV_VAR]
    if path is None:
        if Path(DEFAULT_FILE).is_file():
            path = DEFAULT_FILE
        else:
            return resolve_paths(Config(), Path.cwd().resolve(), source=None)
    return load_config_file(Path(path))


def load_config_file(path: Path) -> Config:
    """Read and validate one TOML config file."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return resolve_paths(config, path.resolve().parent, source=path.resolve())


def config_from_dict(data: dict) -> Config:
    """Build a Config from parsed TOML, naming the key of every problem."""
    sections = {}
    for name, value in data.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(
                f"unknown section [{name}] (known: {', '.join(sorted(_SECTION_TYPES))})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a [{name}] table")
        section_cls = _resolve_type(_SECTION_TYPES[name])
        sections[name] = _build_section(name, section_cls, value)
    config = Config(**sections)
    validate(config)
    return config


def _resolve_type(annotation):
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(_sections))  # annotations are postponed strings here
    # An optional section (``DkimConfig | None``) is built as its dataclass when present.
    present = [a for a in typing.get_args(annotation) if a is not type(None)]
    return present[0] if present else annotation


#: Keys people reach for that must never be in a config file: the
#: file is copied, backed up and pasted into bug reports; the environment is not.
_SECRET_KEYS = {
    "delivery.password": "delivery.password_env",
    "web.password": "web.password_env",
}


def _build_section(section: str, cls, values: dict):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if f"{section}.{key}" in _SECRET_KEYS:
            # Never echo the value: it is a password.
            env_key = _SECRET_KEYS[f"{section}.{key}"]
            env_name = getattr(cls(), env_key.split(".")[1])
            raise ConfigError(
                f"{section}.{key}: passwords do not belong in the config file; remove it and put "
                f"the password in the environment variable named by {env_key} "
                f"(default {env_name})"
            )
        if key not in known:
            raise ConfigError(
                f"unknown key {section}.{key} (known: {', '.join(sorted(known))})"
            )
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def _coerce(key: str, expected, value):
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        expected = next(a for a in typing.get_args(expected) if a is not type(None))
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # TOML allows inf and nan; no setting here means them
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if expected is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path (a non-empty string), got {value!r}")
        return Path(value)
    raise ConfigError(f"{key}: unsupported type {expected!r}")  # pragma: no cover


def resolve_paths(config: Config, base_dir: Path, *, source: Path | None) -> Config:
    """Make every relative path in the config relative to ``base_dir``."""

    def fix(path: Path) -> Path:
        return path if path.is_absolute() else (base_dir / path)

    def fix_optional(path: str) -> str:
        # "" means "not set" and stays "", not the config's folder.
        return str(fix(Path(path))) if path else ""

    return dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, database=fix(config.storage.database)),
        smtp=dataclasses.replace(
            config.smtp, tls_cert=fix_optional(config.smtp.tls_cert),
            tls_key=fix_optional(config.smtp.tls_key),
        ),
        delivery=dataclasses.replace(
            config.delivery, maildir=fix(config.delivery.maildir),
            ca_file=fix_optional(config.delivery.ca_file),
        ),
        digest=dataclasses.replace(config.digest, schedules=fix(config.digest.schedules)),
        subscribers=dataclasses.replace(
            config.subscribers, token_key_file=fix(config.subscribers.token_key_file)
        ),
        dkim=None if config.dkim is None else dataclasses.replace(
            config.dkim, key_file=fix(config.dkim.key_file)
        ),
        base_dir=base_dir,
        source=source,
    )
