"""Printing for commands: JSON for machines, short tables for people."""

from __future__ import annotations

import datetime as dt
import json
from typing import Iterable

import click

from mailer.clock import in_zone


def emit_json(data) -> None:
    """Print ``data`` as indented JSON (dates and bytes as strings)."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_table(rows: Iterable[dict], columns: list[tuple[str, str]]) -> None:
    """Print rows as a plain aligned table; ``columns`` is (key, heading) pairs."""
    rows = list(rows)
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [
        min(60, max(len(heading), *(len(c[i]) for c in cells)))
        for i, (_, heading) in enumerate(columns)
    ]
    click.echo("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(c[:w].ljust(w) for c, w in zip(row, widths)).rstrip())


def _cell(value) -> str:
    if value is None:
        return "-"
    text = str(value)
    return " ".join(text.split())


def local_time(stamp: str | None, zone: dt.tzinfo) -> str:
    """An archive timestamp in the column's zone, as the desk shows it: 2026-11-30 08:00 EST."""
    if not stamp:
        return "-"
    moment = in_zone(stamp, zone)
    if moment is None:
        return stamp
    return f"{moment:%Y-%m-%d %H:%M %Z}"
