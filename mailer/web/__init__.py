"""The web side of ``mailer serve``: public subscription pages and the columnist's desk.

One Starlette application, served by uvicorn on the listener's event loop.
Routes come from two modules with different rules: ``public`` (reachable by
anyone: confirm and unsubscribe links) and ``desk`` (every page behind the
columnist's login); ``health`` adds ``GET /healthz`` for a load balancer or
monitor (no login, nothing private). Writes go through the service's single archive writer;
reads open their own connection, which WAL makes safe beside the listener.
"""

from __future__ import annotations

from typing import Callable

from starlette.applications import Starlette

from mailer.clock import Clock
from mailer.config import Config
from mailer.outbound.templating import template_environment
from mailer.store.writer import DatabaseWriter


def create_app(
    config: Config,
    *,
    writer: DatabaseWriter,
    clock: Clock,
    environ=None,
    on_enqueued: Callable[[], None] | None = None,
    listening: Callable[[], bool] | None = None,
    pipeline_state: Callable[[], str] | None = None,
) -> Starlette:
    """Build the web application: public routes, then the desk behind its login.

    ``listening`` tells ``/healthz`` whether the SMTP listener is serving;
    without it (an app built outside ``mailer serve``) the check fails.
    ``pipeline_state`` tells it whether the pipeline worker runs (``"ok"``)
    or is being restarted (``"restarting"``).
    """
    from mailer.web import archive, desk, guard, health, public

    app = Starlette(
        routes=public.routes() + archive.routes() + health.routes() + desk.routes(),
        middleware=guard.middleware(config, environ=environ),
    )
    app.state.config = config
    app.state.writer = writer
    app.state.clock = clock
    app.state.on_enqueued = on_enqueued  # wakes the outbox after a write that queued mail
    app.state.listening = listening or (lambda: False)
    app.state.pipeline_state = pipeline_state or (lambda: "ok")
    app.state.templates = template_environment(config.templates_override())
    return app
