"""Jinja2 templates for every message and page we produce.

Templates live in the repository's ``templates/`` folder; a columnist may
point ``column.templates_dir`` at a folder of their own, searched first, to
change wording without touching code. HTML templates are autoescaped, so a
reader's name or subject can never become markup.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

BUILTIN_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def template_environment(override_dir: Path | None = None) -> jinja2.Environment:
    """A Jinja2 environment over the override folder (if any) then the built-in templates."""
    loaders = []
    if override_dir is not None and str(override_dir) not in ("", "."):
        loaders.append(jinja2.FileSystemLoader(str(override_dir)))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2", "htm"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env
