"""The columnist's desk on the web: inbox, threads, search, replies.

Every page here is behind :class:`mailer.web.guard.DeskGuard` (the login,
CSRF and the desk's headers). Letters are hostile: templates autoescape
every field, letter bodies are shown as text (HTML letters were turned into
text when archived), and the CSP would stop a remote image or script even if
one slipped through.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer import desk
from mailer.store import archive
from mailer.store.db import open_database
from mailer.web.guard import DeskPassword, DeskState, csrf_token
from mailer.web.rendering import base_context

log = logging.getLogger("mailer.web.desk")

PAGE_SIZE = 50



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
        Route("/threads/{thread_id:int}/urgent", urgent_action, methods=["POST"]),
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


def _render(request: Request, name: str, *, status: int = 200, **context) -> HTMLResponse:
    config = request.app.state.config
    session = request.session
    base = base_context(config)
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
    wait = state.limiter.retry_after(client, known=state.known(request.session))
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
    session_id = desk.new_session_id()
    await _write(request, desk.open_session, session_id=session_id, now=request.app.state.clock())
    session = request.session
    session.clear()  # a fresh session (and CSRF token) after login: no fixation
    session["desk"] = password.fingerprint
    session["known"] = password.fingerprint
    session["sid"] = session_id
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
    """End this login on the server (or, with ``everywhere``, every login), then the cookie."""
    form = await request.form()
    session = request.session
    now = request.app.state.clock()
    if form.get("everywhere"):
        await _write(request, desk.revoke_all_sessions, now=now)
        flash = "You are logged out everywhere: every browser must log in again."
    else:
        await _write(request, desk.revoke_session, session_id=str(session.get("sid") or ""), now=now)
        flash = "You are logged out."
    known = session.get("known")
    session.clear()
    if known:
        session["known"] = known  # the login limiter's overall cap still lets this browser try
    session["flash"] = flash
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
                desk.view_counts(db), desk.arriving(db) if page == 1 else [])

    threads, counts, arriving = await _read(request, load)
    return _render(request, "inbox", view=view, threads=threads[:PAGE_SIZE], counts=counts, arriving=arriving,
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
        return desk.thread_detail(db, thread_id, token_key=_digest_key(request)), desk.view_counts(db)

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


def _digest_key(request: Request) -> bytes | None:
    """The key that rebuilds digest copies for reading, if the column has one yet."""
    from mailer.newsletter.subscribers import load_token_key

    path = request.app.state.config.subscribers.token_key_file
    try:
        return load_token_key(path) if path.exists() else None
    except ValueError:
        return None


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
    # To the confirmation, which the sticky header must not cover (scroll-margin in desk.css).
    return RedirectResponse(f"/threads/{thread_id}#flash", status_code=303)


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


async def urgent_action(request: Request) -> Response:
    """Mark the thread urgent or not urgent; the correction is kept as a labelled example."""
    thread_id = request.path_params["thread_id"]
    form = await request.form()
    choice = str(form.get("urgent") or "")
    if choice not in ("yes", "no"):
        return _render(request, "error", status=400, message="Choose urgent (yes) or not urgent (no).")
    try:
        await _write(request, desk.label_thread, thread_id=thread_id, urgent=choice == "yes",
                     by="web desk", clock=request.app.state.clock)
    except desk.ThreadNotFound:
        return _not_found(request, thread_id)
    except desk.DeskError as exc:
        return _render(request, "error", status=400, message=str(exc))
    request.session["flash"] = f"Thread {thread_id} marked {'urgent' if choice == 'yes' else 'not urgent'}."
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
    arriving = len(await _read(request, desk.arriving)) if query else 0
    return _render(request, "search", status=400 if error else 200, q=query, result=result, search_page=True,
                   arriving=arriving,
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
