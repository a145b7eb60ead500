"""Public routes (no login): the subscribe form, confirmation and unsubscribe pages.

Paths, all reachable by anyone (the archive's are in ``web/archive.py``):

* ``GET  /subscribe``                  the subscription form
* ``POST /subscribe``                  asks for a confirmation by mail (double opt-in), with a
  honeypot field and a rate limit per client and per address; the answer is
  the same whether or not the address is subscribed already
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
import logging
import secrets

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from mailer.newsletter import subscribers
from mailer.store.db import open_database
from mailer.web.guard import LoginLimiter

log = logging.getLogger("mailer.web.public")

#: The form's hidden field: people never see it, form-filling robots fill it in.
HONEYPOT_FIELD = "website"
#: Subscribe requests allowed per client in an hour, and per address in a day.
PER_CLIENT_PER_HOUR = 5
PER_ADDRESS_PER_DAY = 3

_HEADERS = {
    "Cache-Control": "no-store",
    # The token is in the URL: never hand it to the next site as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
#: No scripts, nothing remote; the page's one <style> block is allowed by its nonce.
CSP = ("default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


def routes() -> list:
    """The public routes."""
    return [
        Route("/subscribe", subscribe_page, methods=["GET", "POST"]),
        Route("/subscribe/confirm/{token}", confirm_page, methods=["GET", "POST"]),
        Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET", "POST"]),
    ]


def page(request: Request, name: str, status: int = 200, *, headers: dict | None = None,
         **context) -> HTMLResponse:
    """A public page in the column's design (``templates/web/public/NAME.html.j2``)."""
    config = request.app.state.config
    nonce = secrets.token_urlsafe(16)
    template = request.app.state.templates.get_template(f"web/public/{name}.html.j2")
    html = template.render(
        column=config.column,
        subscribe_address=config.addresses.subscribe,
        unsubscribe_address=config.addresses.unsubscribe,
        letters_address=config.addresses.letters,
        nonce=nonce,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={
        **_HEADERS, "Content-Security-Policy": CSP.format(nonce=nonce), **(headers or {})})




class SubscribeLimits:
    """How often one client, and one address, may ask for a confirmation mail."""

    def __init__(self) -> None:
        self.clients = LoginLimiter(per_client=PER_CLIENT_PER_HOUR, overall=10**9, window_seconds=3600.0)
        self.addresses = LoginLimiter(per_client=PER_ADDRESS_PER_DAY, overall=10**9, window_seconds=86400.0)


def _limits(request: Request) -> SubscribeLimits:
    state = request.app.state
    if getattr(state, "subscribe_limits", None) is None:
        state.subscribe_limits = SubscribeLimits()
    return state.subscribe_limits


async def subscribe_page(request: Request) -> HTMLResponse:
    """GET shows the form; POST asks for a confirmation by mail and always answers alike.

    Whether the address was new, pending or subscribed already, the reader
    sees the same "check your inbox" page: the form must not tell a stranger
    who reads the column. A filled honeypot gets that page too, and no mail.
    """
    if request.method == "GET":
        return page(request, "subscribe", state="form", email="", error="")
    form = await request.form()
    address = str(form.get("email", "")).strip()
    try:
        email = subscribers.normalize_email(address)
    except subscribers.InvalidAddress as exc:
        return page(request, "subscribe", 400, state="form", email=address[:254], error=str(exc))
    if form.get(HONEYPOT_FIELD):
        return page(request, "subscribe", state="sent", email=email)
    limits = _limits(request)
    client = request.client.host if request.client else "unknown"
    wait = max(limits.clients.retry_after(client), limits.addresses.retry_after(email))
    if wait > 0:
        minutes = max(1, int(wait // 60) + 1)
        return page(request, "subscribe", 429, headers={"Retry-After": str(int(wait) + 1)},
                    state="busy", email=email, minutes=minutes)
    limits.clients.failed(client)
    limits.addresses.failed(email)
    state = request.app.state
    outcome = await state.writer.run(lambda db: subscribers.request_subscription(
        db, email, config=state.config, templates=state.templates, clock=state.clock,
        source="subscribe form"))
    log.info("subscribe form: %s", outcome.disposition.split(":")[0])
    if outcome.sent and state.on_enqueued is not None:
        state.on_enqueued()
    return page(request, "subscribe", state="sent", email=email)


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
    return page(request, "confirm", _STATUS[state], state=state, email=subscriber.get("email", ""),
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
            return page(request, "unsubscribe", 404, state="invalid", email="")
        return page(request, "unsubscribe", state="done" if changed else "already", email=subscriber["email"])
    subscriber_id = subscribers.subscriber_for_unsubscribe_token(key, token)
    subscriber = None
    if subscriber_id is not None:
        subscriber = await _read(request, subscribers.get_subscriber_by_id, subscriber_id)
    if subscriber is None:
        return page(request, "unsubscribe", 404, state="invalid", email="")
    state = "already" if subscriber["status"] == "unsubscribed" else "ask"
    return page(request, "unsubscribe", state=state, email=subscriber["email"])
