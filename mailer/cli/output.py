"""Printing for commands: JSON for machines, short tables for people."""

from __future__ import annotations

import json
from typing import Iterable

import click


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
