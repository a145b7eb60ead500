"""The columnist's desk on the web: inbox, threads, search, replies, every page behind a login.

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
to the password it was opened with, so changing the password ends it. Login
failures are counted per client address and overall, in memory.

Letters are hostile: templates autoescape every field, letter bodies are
shown as text (HTML letters were turned into text when archived), and the
CSP would stop a remote image or script even if one slipped through.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import archive, desk
from ..clock import parse_iso
from ..config import Config, WebConfig
from ..db import open_database

log = logging.getLogger("mailer.web.desk")

#: Paths served by ``public`` for readers, and ``health`` for monitors: no
#: login, no CSRF, no desk headers.
PUBLIC_PREFIXES = ("/subscribe", "/unsubscribe", "/healthz")
#: Desk paths reachable before logging in.
LOGIN_EXEMPT = frozenset({"/login", "/desk.css"})
SESSION_COOKIE = "mailer_desk"
#: Largest form the desk accepts (a long reply is a few tens of kilobytes).
MAX_FORM_BYTES = 1024 * 1024
PAGE_SIZE = 50

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

    The overall limit stops a guesser spread over many addresses; its price
    is that such an attack also locks the columnist out for the window.
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

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0 means now)."""
        now = self.clock()
        self._prune(self._all, now)
        failures = self._clients.get(client)
        if failures is not None:
            self._prune(failures, now)
        waits = []
        if failures is not None and len(failures) >= self.per_client:
            waits.append(failures[0] + self.window - now)
        if len(self._all) >= self.overall:
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
        """Forget a client's failures after it logged in."""
        self._clients.pop(client, None)

    def _prune(self, stamps: collections.deque, now: float) -> None:
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()


@dataclass
class DeskState:
    """What the guard and the routes share: the password, the limiter, session lifetime."""

    password: DeskPassword
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    session_seconds: int = 12 * 3600

    def logged_in(self, session) -> bool:
        """Whether ``session`` belongs to a login with the current password that has not expired."""
        mark = session.get("desk")
        since = session.get("since")
        if not isinstance(mark, str) or not isinstance(since, (int, float)):
            return False
        if not hmac.compare_digest(mark, self.password.fingerprint):
            return False
        return 0 <= time.time() - since < self.session_seconds


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
            **_base_context_for(app.state.config), status=status, message=message, logged_in=False,
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
    state = DeskState(password, LoginLimiter(), session_seconds)
    return [
        Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                   max_age=session_seconds, same_site="strict", https_only=config.web.secure_cookies),
        Middleware(DeskGuard, state=state),
    ]


def routes() -> list:
    """The desk routes (all behind DeskGuard)."""
    return [
        Route("/", inbox_page, methods=["GET"]),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/search", search_page, methods=["GET"]),
        Route("/threads/{thread_id:int}", thread_page, methods=["GET"]),
        Route("/threads/{thread_id:int}/reply", reply_action, methods=["POST"]),
        Route("/threads/{thread_id:int}/status", status_action, methods=["POST"]),
        Route("/threads/{thread_id:int}/draft", draft_page, methods=["GET"]),
        Route("/threads/{thread_id:int}/draft.md", draft_download, methods=["GET"]),
        Route("/threads/{thread_id:int}/thread.mbox", mbox_download, methods=["GET"]),
        Route("/desk.css", stylesheet, methods=["GET"]),
    ]


# ---------------------------------------------------------------------------
# Helpers for pages


def _state(request: Request) -> DeskState:
    return request.scope["mailer.desk"]


async def _read(request: Request, fn, *args, **kwargs):
    """Run ``fn(db, ...)`` on a fresh read connection, off the event loop."""
    path = request.app.state.config.storage.database

    def run():
        db = open_database(path, migrate=False)
        try:
            return fn(db, *args, **kwargs)
        finally:
            db.close()

    return await run_in_threadpool(run)


async def _write(request: Request, fn, **kwargs):
    """Run ``fn(db, **kwargs)`` in a committed transaction on the archive writer."""
    result = await request.app.state.writer.run(functools.partial(fn, **kwargs))
    # A reply was maybe queued: let the outbox look now rather than at its next poll.
    wake = getattr(request.app.state, "on_enqueued", None)
    if wake is not None:
        wake()
    return result


def _base_context_for(config: Config) -> dict:
    return {"column": config.column, "when": _when_fn(config), "when_full": _when_full_fn(config),
            "reflow": desk.reflow}


def _render(request: Request, name: str, *, status: int = 200, **context) -> HTMLResponse:
    config = request.app.state.config
    session = request.session
    base = _base_context_for(config)
    base.update(
        logged_in=_state(request).logged_in(session),
        csrf=csrf_token(session),
        flash=session.pop("flash", None),
        q="",
        path=request.url.path,
        status=status,
    )
    base.update(context)
    html = request.app.state.templates.get_template(f"web/desk/{name}.html.j2").render(**base)
    return HTMLResponse(html, status_code=status)


def _when_fn(config: Config):
    zone = config.column.zone

    def when(stamp: str | None) -> str:
        """A short local time: 09:14 today, Tue 24 Nov this year, 24 Nov 2025 before."""
        if not stamp:
            return ""
        try:
            moment = parse_iso(stamp).astimezone(zone)
        except ValueError:
            return stamp
        today = dt.datetime.now(zone).date()
        if moment.date() == today:
            return f"{moment:%H:%M}"
        if moment.year == today.year:
            return f"{moment:%a} {moment.day} {moment:%b}"
        return f"{moment.day} {moment:%b %Y}"

    return when


def _when_full_fn(config: Config):
    zone = config.column.zone

    def when_full(stamp: str | None) -> str:
        if not stamp:
            return ""
        try:
            moment = parse_iso(stamp).astimezone(zone)
        except ValueError:
            return stamp
        return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M} ({moment:%Z})"

    return when_full


def _client(request: Request) -> str:
    # The peer address as uvicorn saw it. Behind a reverse proxy every request
    # comes from the proxy; the overall limit still holds then.
    return request.client.host if request.client else "unknown"


def _safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else becomes the inbox."""
    value = value or "/"
    if (not value.startswith("/") or value.startswith("//") or value.startswith("/\\")
            or any(ord(ch) < 32 for ch in value)):
        return "/"
    return value


def _not_found(request: Request, thread_id: int) -> HTMLResponse:
    return _render(request, "error", status=404,
                   message=f"There is no thread {thread_id}. It may have been forgotten at a reader's request.")


# ---------------------------------------------------------------------------
# Pages


async def login_page(request: Request) -> Response:
    """Log in with the desk password (rate-limited)."""
    state = _state(request)
    password = state.password
    next_path = _safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if state.logged_in(request.session):
            return RedirectResponse(next_path, status_code=303)
        return _login(request, password, next_path)
    form = await request.form()
    next_path = _safe_next(form.get("next"))
    if not password.configured:
        return _login(request, password, next_path, status=503)
    client = _client(request)
    wait = state.limiter.retry_after(client)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        return _login(request, password, next_path, status=429,
                      error=f"Too many wrong passwords. Try again in about {minutes} minute(s).")
    given = str(form.get("password") or "")
    if not await run_in_threadpool(password.check, given):
        state.limiter.failed(client)
        log.warning("failed desk login from %s", client)
        return _login(request, password, next_path, status=401, error="That password is not right.")
    state.limiter.succeeded(client)
    session = request.session
    session.clear()  # a fresh session (and CSRF token) after login: no fixation
    session["desk"] = password.fingerprint
    session["since"] = int(time.time())
    csrf_token(session)
    log.info("desk login from %s", client)
    return RedirectResponse(next_path, status_code=303)


def _login(request: Request, password: DeskPassword, next_path: str, *, status: int = 200,
           error: str | None = None) -> HTMLResponse:
    hour = dt.datetime.now(request.app.state.config.column.zone).hour
    salute = "Good morning." if hour < 12 else "Good afternoon." if hour < 18 else "Good evening."
    return _render(request, "login", status=status, error=error, next=next_path, salute=salute,
                   configured=password.configured, problem=password.problem,
                   password_env=password.env_name)


async def logout(request: Request) -> Response:
    """End the session."""
    request.session.clear()
    request.session["flash"] = "You are logged out."
    return RedirectResponse("/login", status_code=303)


async def inbox_page(request: Request) -> Response:
    """Threads: urgent first, then new, newest first; with counts per status."""
    view = request.query_params.get("view", "inbox")
    if view not in desk.INBOX_VIEWS:
        view = "inbox"
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1

    def load(db):
        return (desk.inbox(db, view=view, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE),
                desk.view_counts(db))

    threads, counts = await _read(request, load)
    return _render(request, "inbox", view=view, threads=threads[:PAGE_SIZE], counts=counts,
                   page=page, more=len(threads) > PAGE_SIZE, views=_VIEW_LABELS)


_VIEW_LABELS = (("inbox", "Inbox"), ("urgent", "Urgent"), ("new", "New"), ("answered", "Answered"),
                ("archived", "Archived"), ("all", "All"))


async def thread_page(request: Request) -> Response:
    """One thread, oldest message first, with the reply form."""
    thread_id = request.path_params["thread_id"]
    return await _thread(request, thread_id)


async def _thread(request: Request, thread_id: int, *, status: int = 200, text: str | None = None,
                  error: str | None = None, preview: str | None = None) -> Response:
    def load(db):
        return desk.thread_detail(db, thread_id), desk.view_counts(db)

    try:
        detail, counts = await _read(request, load)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    crisis = sorted({s for m in detail["messages"] for s in (m["meta"].get("crisis") or [])
                     if m["direction"] == "inbound" and isinstance(s, str)})
    return _render(
        request, "thread", status=status, counts=counts, crisis=crisis, error=error, preview=preview,
        text=desk.greeting(detail["letter"]) + "\n\n" if text is None else text,
        other_statuses=[s for s in archive.THREAD_STATUSES if s != detail["thread"]["status"]],
        **detail,
    )


async def reply_action(request: Request) -> Response:
    """Preview or send the columnist's reply to the thread."""
    thread_id = request.path_params["thread_id"]
    form = await request.form()
    text = str(form.get("text") or "")
    config, templates = request.app.state.config, request.app.state.templates
    if form.get("action") == "preview":
        try:
            draft = await _read(request, desk.compose_reply, thread_id, text, config=config, templates=templates)
        except desk.ThreadNotFound:
            return _not_found(request, thread_id)
        except desk.DeskError as exc:
            return await _thread(request, thread_id, status=400, text=text, error=str(exc))
        return await _thread(request, thread_id, text=text, preview=draft.outgoing.body.text)
    try:
        replied = await _write(request, desk.reply, thread_id=thread_id, text=text, config=config,
                               templates=templates, clock=request.app.state.clock)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    except desk.DeskError as exc:
        return await _thread(request, thread_id, status=400, text=text, error=str(exc))
    request.session["flash"] = f"Your reply to {replied.recipient} is on its way. The thread is answered."
    return RedirectResponse(f"/threads/{thread_id}#m{replied.message_id}", status_code=303)


async def status_action(request: Request) -> Response:
    """Mark the thread new, answered or archived."""
    thread_id = request.path_params["thread_id"]
    form = await request.form()
    status = str(form.get("status") or "")
    try:
        await _write(request, desk.mark, thread_id=thread_id, status=status)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    except desk.DeskError as exc:
        return _render(request, "error", status=400, message=str(exc))
    if status == "archived":
        request.session["flash"] = f"Thread {thread_id} archived."
        return RedirectResponse("/", status_code=303)
    request.session["flash"] = f"Thread {thread_id} marked {status}."
    return RedirectResponse(f"/threads/{thread_id}", status_code=303)


async def search_page(request: Request) -> Response:
    """Search every message; matches highlighted in snippets."""
    query = request.query_params.get("q", "").strip()
    result, error = None, None
    if query:
        try:
            result = await _read(request, desk.search, query)
        except archive.SearchSyntaxError as exc:
            error = str(exc)
    counts = await _read(request, desk.view_counts)
    return _render(request, "search", status=400 if error else 200, q=query, result=result, search_page=True,
                   error=error, counts=counts, literal_href="/search?q=" + quote(_quoted(query)))


def _quoted(query: str) -> str:
    return '"' + query.replace('"', "") + '"'


async def draft_page(request: Request) -> Response:
    """A topic draft from the thread's letter, identifying details removed."""
    thread_id = request.path_params["thread_id"]
    config, clock = request.app.state.config, request.app.state.clock
    try:
        text = await _read(request, desk.topic_draft, thread_id, config=config, clock=clock)
        thread = await _read(request, archive.get_thread, thread_id)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    except desk.DeskError as exc:
        return _render(request, "error", status=400, message=str(exc))
    counts = await _read(request, desk.view_counts)
    return _render(request, "draft", thread=thread, draft=text, counts=counts)


async def draft_download(request: Request) -> Response:
    """The topic draft as a Markdown file."""
    thread_id = request.path_params["thread_id"]
    config, clock = request.app.state.config, request.app.state.clock
    try:
        text = await _read(request, desk.topic_draft, thread_id, config=config, clock=clock)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    except desk.DeskError as exc:
        return _render(request, "error", status=400, message=str(exc))
    return Response(text, media_type="text/markdown; charset=utf-8", headers={
        "content-disposition": f'attachment; filename="topic-draft-{thread_id}.md"'})


async def mbox_download(request: Request) -> Response:
    """The thread as an mbox file, original bytes, for any mail client."""
    thread_id = request.path_params["thread_id"]

    config = request.app.state.config

    def export(db):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "thread.mbox"
            desk.export_mbox(db, thread_id, path, config=config)
            return path.read_bytes()

    try:
        data = await _read(request, export)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    except desk.DeskError as exc:
        return _render(request, "error", status=500, message=str(exc))
    return Response(data, media_type="application/mbox", headers={
        "content-disposition": f'attachment; filename="thread-{thread_id}.mbox"'})


async def stylesheet(request: Request) -> Response:
    """The desk's one stylesheet (a template file, so a columnist can override it)."""
    env = request.app.state.templates
    source, _, _ = env.loader.get_source(env, "web/desk/desk.css")
    return Response(source, media_type="text/css; charset=utf-8",
                    headers={"cache-control": "private, max-age=300"})
