"""Write a Config (say, from conftest.make_config) to a TOML file the CLI and `mailer serve` can load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mailer.config import Config


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        # A JSON string without \u escapes for non-ASCII is a TOML basic string.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config_file(config: Config, path: Path, **overrides: dict) -> Path:
    """Every section of ``config`` as TOML at ``path`` (paths are absolute already); ``overrides`` per section."""
    text = ""
    for section in dataclasses.fields(config):
        if section.name in ("base_dir", "source") or getattr(config, section.name) is None:
            continue  # an optional section left out (e.g. [dkim]) is read back as None
        values = dataclasses.asdict(getattr(config, section.name)) | overrides.get(section.name, {})
        text += f"[{section.name}]\n"
        # None has no TOML spelling: leaving the key out gives the same default.
        text += "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items() if value is not None)
    path.write_text(text, encoding="utf-8")
    return path
