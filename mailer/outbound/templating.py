"""Jinja2 templates for every message and page we produce.

Templates live in the repository's ``templates/`` folder; a columnist may
point ``column.templates_dir`` at a folder of their own, searched first, to
change wording without touching code. HTML templates are autoescaped, so a
reader's name or subject can never become markup.
"""

from __future__ import annotations

import functools
import re
import textwrap
from pathlib import Path

import css_inline
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
    env.filters["reflow"] = reflow
    env.filters["tel"] = tel_uri
    return env


#: Plain-text parts are wrapped here, never by hand in a template.
TEXT_WIDTH = 72
_BULLET = re.compile(r"[*>-] ")


def reflow(text: str, width: int = TEXT_WIDTH) -> str:
    """Wrap a plain-text body at ``width`` without ragged lines.

    Paragraphs are separated by blank lines. A paragraph written on one line
    is filled, so a long name or subject dropped into a sentence never leaves
    a short line behind it. A paragraph of several lines (a list, a
    signature, a link under its title) keeps its line breaks; each of its
    lines is wrapped on its own, with a hanging indent under an indent or a
    bullet. Words longer than the width (links) are never broken.
    """
    out = []
    for paragraph in re.split(r"\n[ \t]*\n", text.strip("\n")):
        lines = [line.rstrip() for line in paragraph.splitlines() if line.strip()]
        if len(lines) == 1:
            out.append(_wrap_line(lines[0], width))
        elif lines:
            out.append("\n".join(_wrap_line(line, width) for line in lines))
    return "\n\n".join(out) + "\n"


# Most lines of a message are the template's own and the same in every
# message; wrapping one costs ~25 us (textwrap), so the answers are kept.
# Bounded, so a stream of readers' subjects cannot grow it.
@functools.lru_cache(maxsize=256)
def _wrap_line(line: str, width: int) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    marker = _BULLET.match(line.lstrip())
    hanging = indent + (" " * len(marker.group(0)) if marker else "")
    if line.lstrip().startswith("> "):
        hanging = indent + "> "
    return _fill(line.strip(), width, indent, hanging)


def _fill(text: str, width: int, first: str, rest: str) -> str:
    return textwrap.fill(text, width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def tel_uri(number: str, scheme: str = "tel") -> str:
    """A ``tel:`` (or ``sms:``) URI for a number as people write it: "988", "+44 116 123"."""
    return f"{scheme}:" + re.sub(r"[^0-9+]", "", number)


# Gmail and Outlook drop <style> blocks (or parts of them), so every rule is
# copied onto the elements it styles. @media rules (dark mode, narrow
# screens) cannot be inlined and stay in the <style> block; they win over the
# inlined styles with !important.
_INLINER = css_inline.CSSInliner(keep_at_rules=True)


def inline_css(html: str) -> str:
    """The HTML with its stylesheet copied into style attributes (at-rules kept in <style>)."""
    return _INLINER.inline(html)
