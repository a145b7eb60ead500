"""Public routes (no login): subscription confirmation and unsubscribe pages."""

from __future__ import annotations


def routes() -> list:
    """The public routes."""
    return []
