"""The desk's guard: who may log in, sessions, CSRF, and the headers of every desk page.

A request meets :class:`DeskGuard` before any desk route, and it decides in
this order:

1. Paths of the public pages (``/subscribe/...``, ``/unsubscribe/...``) pass
   straight through: readers and mail providers (RFC 8058 one-click POSTs)
   reach them without a login or a CSRF token, and the guard adds nothing.
   So does ``/healthz`` (``web/health.py``), for load balancers and monitors.
2. Every other response gets the desk's headers: a strict
   Content-Security-Policy (no scripts at all, no remote anything),
   ``X-Frame-Options: DENY``, ``Cache-Control: no-store``,
   ``Referrer-Policy: no-referrer``, ``nosniff``.
3. A POST must carry the session's CSRF token (form field ``csrf``), compared
   in constant time; its body is bounded.
4. Everything but ``/login`` and the stylesheet needs a logged-in session.

Sessions are Starlette's signed cookies (secret from ``web.secret_key_env``,
else random per process, so a restart logs everyone out). A session is bound
to the password it was opened with, so changing the password ends it, and it
names a row of ``desk_sessions`` (``desk/sessions.py``) that logging out
closes, so a copy of the cookie dies with it. Login failures are counted per
client address and overall, in memory; the overall cap never holds back a
client the desk already knows.

Letters are hostile: templates autoescape every field, letter bodies are
shown as text (HTML letters were turned into text when archived), and the
CSP would stop a remote image or script even if one slipped through.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailer import desk
from mailer.config import Config, WebConfig
from mailer.web.rendering import base_context

log = logging.getLogger("mailer.web.desk")


#: Paths served by ``public`` for readers, and ``health`` for monitors: no
#: login, no CSRF, no desk headers.
PUBLIC_PREFIXES = ("/subscribe", "/unsubscribe", "/archive", "/healthz")
#: Desk paths reachable before logging in.
LOGIN_EXEMPT = frozenset({"/login", "/desk.css"})
SESSION_COOKIE = "mailer_desk"
#: Largest form the desk accepts (a long reply is a few tens of kilobytes).
MAX_FORM_BYTES = 1024 * 1024
#: Largest form the desk accepts (a long reply is a few tens of kilobytes).


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; img-src 'self' data:; style-src 'self'; "
    "font-src 'self'; connect-src 'none'"
)
DESK_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)


def is_public(path: str) -> bool:
    """Whether ``path`` belongs to the public pages (exact prefix or below it)."""
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES)


# ---------------------------------------------------------------------------
# Who may log in, and how often they may try


class DeskPassword:
    """The desk password from config: a scrypt hash, or a value in an environment variable."""

    def __init__(self, web: WebConfig, environ, secret: str) -> None:
        self.hash = web.password_hash.strip()
        self.plain = "" if self.hash else environ.get(web.password_env, "")
        self.env_name = web.password_env
        self.problem: str | None = None
        if self.hash:
            try:
                desk.parse_password_hash(self.hash)
            except desk.PasswordHashError as exc:
                self.problem = str(exc)
        # Sessions carry this, so a new password (or secret) ends every old session.
        material = (self.hash or self.plain).encode("utf-8")
        self.fingerprint = hmac.new(secret.encode("utf-8"), material, hashlib.sha256).hexdigest()[:32]

    @property
    def configured(self) -> bool:
        """Whether anyone can log in at all."""
        return bool(self.hash or self.plain) and self.problem is None

    def check(self, password: str) -> bool:
        """Whether ``password`` is the desk password (constant time; slow on purpose for a hash)."""
        if not self.configured:
            return False
        if self.hash:
            return desk.verify_password(password, self.hash)
        given = hashlib.sha256((password or "").encode("utf-8")).digest()
        return hmac.compare_digest(given, hashlib.sha256(self.plain.encode("utf-8")).digest())


class LoginLimiter:
    """Failed logins allowed per client address and overall within a sliding window.

    The overall limit stops a guesser spread over many addresses. So that
    such a guesser cannot lock the columnist out, it does not apply to a
    *known* client: an address that logged in successfully within the
    window, or a browser whose signed session shows an earlier login (the
    caller says so with ``known=True``). The per-client limit applies to
    everyone.
    """

    def __init__(self, *, per_client: int = 5, overall: int = 50, window_seconds: float = 900.0,
                 clock=time.monotonic, max_clients: int = 10_000) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window_seconds
        self.clock = clock
        self.max_clients = max_clients
        self._clients: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._all: collections.deque = collections.deque()
        self._known: collections.OrderedDict[str, float] = collections.OrderedDict()

    def retry_after(self, client: str, *, known: bool = False) -> float:
        """Seconds until ``client`` may try again (0 means now)."""
        now = self.clock()
        self._prune(self._all, now)
        failures = self._clients.get(client)
        if failures is not None:
            self._prune(failures, now)
        waits = []
        if failures is not None and len(failures) >= self.per_client:
            waits.append(failures[0] + self.window - now)
        if len(self._all) >= self.overall and not (known or self._recently_succeeded(client, now)):
            waits.append(self._all[0] + self.window - now)
        return max(waits, default=0.0)

    def failed(self, client: str) -> None:
        """Count one failed attempt."""
        now = self.clock()
        failures = self._clients.pop(client, None) or collections.deque()
        failures.append(now)
        self._clients[client] = failures
        self._all.append(now)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget a client's failures after it logged in, and know it for the window."""
        self._clients.pop(client, None)
        self._known.pop(client, None)
        self._known[client] = self.clock()
        while len(self._known) > self.max_clients:
            self._known.popitem(last=False)

    def _recently_succeeded(self, client: str, now: float) -> bool:
        since = self._known.get(client)
        return since is not None and since > now - self.window

    def _prune(self, stamps: collections.deque, now: float) -> None:
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()


@dataclass
class DeskState:
    """What the guard and the routes share: the password, open logins, the limiter, session lifetime."""

    password: DeskPassword
    sessions: desk.SessionRegister
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    session_seconds: int = 12 * 3600

    def logged_in(self, session) -> bool:
        """Whether ``session`` is an open login with the current password that has not expired."""
        mark = session.get("desk")
        since = session.get("since")
        if not isinstance(mark, str) or not isinstance(since, (int, float)):
            return False
        if not hmac.compare_digest(mark, self.password.fingerprint):
            return False
        if not 0 <= time.time() - since < self.session_seconds:
            return False
        return self.sessions.is_open(session.get("sid"))

    def known(self, session) -> bool:
        """Whether this browser logged in with the current password before (signed, so unforgeable)."""
        mark = session.get("known")
        return isinstance(mark, str) and hmac.compare_digest(mark, self.password.fingerprint)


def csrf_token(session) -> str:
    """The session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


# ---------------------------------------------------------------------------
# The guard


class DeskGuard:
    """ASGI middleware: desk headers, CSRF on every POST, login on every desk page."""

    def __init__(self, app, *, state: DeskState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        scope["mailer.desk"] = self.state
        send = _with_desk_headers(send)
        method, path = scope["method"], scope["path"]
        session = scope.get("session", {})
        if method not in ("GET", "HEAD", "POST"):
            await _refuse(scope, receive, send, 405, "The desk does not do that.")
            return
        if method == "POST":
            body = await _read_body(receive, MAX_FORM_BYTES)
            if body is None:
                await _refuse(scope, receive, send, 413, "That form is too large for the desk.")
                return
            if not _csrf_ok(scope, body, session):
                await _refuse(scope, receive, send, 403,
                              "This form has expired or did not come from the desk. Go back, "
                              "reload the page and try again.")
                return
            receive = _replay(body, receive)
        if path not in LOGIN_EXEMPT and not self.state.logged_in(session):
            if method in ("GET", "HEAD"):
                target = path + (("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else "")
                location = "/login" + ("" if target == "/" else "?" + urlencode({"next": target}))
                await RedirectResponse(location, status_code=303)(scope, receive, send)
            else:
                await _refuse(scope, receive, send, 403, "Please log in again.")
            return
        await self.app(scope, receive, send)


def _with_desk_headers(send):
    async def wrapped(message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            for name, value in DESK_HEADERS:
                if name.encode("latin-1") not in present:
                    headers.append((name.encode("latin-1"), value.encode("latin-1")))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the already-read body to the app, then the real channel."""
    done = False

    async def replayed():
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _csrf_ok(scope, body: bytes, session) -> bool:
    expected = session.get("csrf") if hasattr(session, "get") else None
    if not isinstance(expected, str) or not expected:
        return False
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    given = headers.get("x-csrf-token", "")
    if not given and headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
        values = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get("csrf", [])
        given = values[0] if len(values) == 1 else ""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    app = scope.get("app")
    try:
        html = app.state.templates.get_template("web/desk/error.html.j2").render(
            **base_context(app.state.config), status=status, message=message, logged_in=False,
            csrf="", flash=None, q="",
        )
        response: Response = HTMLResponse(html, status_code=status)
    except Exception:  # noqa: BLE001 - a refusal must never fail
        response = Response(message, status_code=status, media_type="text/plain")
    await response(scope, receive, send)


# ---------------------------------------------------------------------------
# Wiring


def middleware(config: Config, environ=None) -> list:
    """Sessions (signed cookies) and the guard, outermost first."""
    environ = os.environ if environ is None else environ
    secret = environ.get(config.web.secret_key_env, "")
    if not secret:
        secret = secrets.token_urlsafe(32)
        log.info("%s is not set: desk logins last until mailer serve restarts", config.web.secret_key_env)
    elif len(secret) < 16:
        log.warning("%s is shorter than 16 characters: use a long random value", config.web.secret_key_env)
    password = DeskPassword(config.web, environ, secret)
    if password.problem:
        log.error("the desk refuses logins: %s", password.problem)
    elif not password.configured:
        log.warning("no desk password is set (web.password_hash or $%s): the desk refuses logins",
                    config.web.password_env)
    session_seconds = max(60, int(config.web.session_hours * 3600))
    state = DeskState(password, desk.SessionRegister(config.storage.database), LoginLimiter(), session_seconds)
    return [
        Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                   max_age=session_seconds, same_site="strict", https_only=config.web.secure_cookies),
        Middleware(DeskGuard, state=state),
    ]
