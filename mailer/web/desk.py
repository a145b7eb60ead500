"""The columnist's desk (every route behind the login)."""

from __future__ import annotations


def routes() -> list:
    """The desk routes."""
    return []


def middleware(config, environ=None) -> list:
    """Middleware the desk needs (sessions, CSRF)."""
    return []
