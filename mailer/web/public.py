"""Public routes (no login): subscription confirmation and unsubscribe pages.

Paths, all reachable by anyone, all under two prefixes:

* ``GET  /subscribe/confirm/{token}``  a page with a "Yes, subscribe me" button
* ``POST /subscribe/confirm/{token}``  confirms the subscription
* ``GET  /unsubscribe/{token}``        a page with an "Unsubscribe" button
* ``POST /unsubscribe/{token}``        unsubscribes at once; this is also the
  RFC 8058 one-click target (``List-Unsubscribe-Post: List-Unsubscribe=One-Click``)

**For the desk's middleware:** every path starting with ``/subscribe/`` or
``/unsubscribe/`` must be exempt from login *and* from CSRF checks. Mail
providers send the one-click POST with no cookie, session or CSRF token, and
readers arrive from their mail program. The token in the path is the
capability: confirmation tokens are random and stored only hashed, and
unsubscribe tokens are MACs under a key outside the database (see
``mailer.subscribers``). A GET never changes anything, so link scanners
that fetch every URL in a message cannot subscribe or unsubscribe anyone.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from mailer.newsletter import subscribers
from mailer.store.db import open_database

#: Path prefixes the desk must leave open (no login, no CSRF).
PUBLIC_PREFIXES = ("/subscribe/", "/unsubscribe/")

_HEADERS = {
    "Cache-Control": "no-store",
    # The token is in the URL: never hand it to the next site as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def routes() -> list:
    """The public routes."""
    return [
        Route("/subscribe/confirm/{token}", confirm_page, methods=["GET", "POST"]),
        Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET", "POST"]),
    ]


def _page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    config = request.app.state.config
    template = request.app.state.templates.get_template(f"web/public/{name}.html.j2")
    html = template.render(
        column=config.column,
        subscribe_address=config.addresses.subscribe,
        unsubscribe_address=config.addresses.unsubscribe,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


async def _read(request: Request, fn, *args):
    """Run ``fn(db, *args)`` on a read-only connection of its own (GETs change nothing)."""
    path = request.app.state.config.storage.database

    def work():
        db = open_database(path, migrate=False)
        try:
            return fn(db, *args)
        finally:
            db.close()

    return await asyncio.to_thread(work)


_STATUS = {"valid": 200, "confirmed": 200, "used": 200, "expired": 410, "unknown": 404}


async def confirm_page(request: Request) -> HTMLResponse:
    """GET shows what the link would do; POST confirms the subscription."""
    token = request.path_params["token"]
    clock = request.app.state.clock
    if request.method == "POST":
        check = await request.app.state.writer.run(
            lambda db: subscribers.confirm(db, token, clock=clock, how="link"))
        state = "confirmed" if check.state == "valid" else check.state
    else:
        check = await _read(request, lambda db: subscribers.check_confirm_token(db, token, now=clock()))
        state = check.state
    subscriber = check.subscriber or {}
    return _page(request, "confirm", _STATUS[state], state=state, email=subscriber.get("email", ""),
                 subscribed=subscriber.get("status") == "confirmed")


async def unsubscribe_page(request: Request) -> HTMLResponse:
    """GET asks; POST (a button, or a mail provider's one-click) unsubscribes at once."""
    token = request.path_params["token"]
    config = request.app.state.config
    key = subscribers.token_key(config)
    if request.method == "POST":
        clock = request.app.state.clock
        subscriber, changed = await request.app.state.writer.run(
            lambda db: subscribers.unsubscribe_by_token(db, key, token, clock=clock, how="unsubscribe link"))
        if subscriber is None:
            return _page(request, "unsubscribe", 404, state="invalid", email="")
        return _page(request, "unsubscribe", state="done" if changed else "already", email=subscriber["email"])
    subscriber_id = subscribers.subscriber_for_unsubscribe_token(key, token)
    subscriber = None
    if subscriber_id is not None:
        subscriber = await _read(request, subscribers.get_subscriber_by_id, subscriber_id)
    if subscriber is None:
        return _page(request, "unsubscribe", 404, state="invalid", email="")
    state = "already" if subscriber["status"] == "unsubscribed" else "ask"
    return _page(request, "unsubscribe", state=state, email=subscriber["email"])
