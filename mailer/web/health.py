"""``GET /healthz``: may a load balancer or monitor send traffic here?

Public (no login, no session, no CSRF) and private-free: the answer is only
``{"status": "ok" | "unhealthy", "checks": {"database": ..., "listener": ..., "writer": ..., "pipeline": ...}}``,
never a path, an error text or a count. 200 when every check passes, 503
(naming the failed check) otherwise:

* ``database``: a read on a fresh connection answered (``"ok"``), or did not
  (``"failed"``): the file is missing, unreadable, not a database, or locked
  past the timeout;
* ``listener``: the service's SMTP listener is serving (``"ok"``) or not
  (``"not serving"``: still starting, or shutting down, since the listener is
  the first thing a stopping service closes);
* ``writer``: the archive's one writer is idle or busy for less than
  WRITER_STUCK_SECONDS (``"ok"``), or has been inside one batch longer
  (``"stuck"``): letters then wait for their 250 and CLI writes for the lock;
* ``pipeline``: the pipeline worker process runs, or the pipeline runs in the
  service (``"ok"``), or the worker died and waits to be started again
  (``"restarting"``): letters are still taken and kept, but none is filed or
  acknowledged until it is back. A worker that keeps dying keeps this check
  failing (its restarts wait up to 30 s).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailer.store.db import StorageError, ping

#: The path, exempt from the desk's login (see ``guard.PUBLIC_PREFIXES``).
PATH = "/healthz"
#: How long the database may take to answer before the check fails.
DATABASE_TIMEOUT = 2.0
#: How long one write batch may hold the archive before the writer counts as stuck.
WRITER_STUCK_SECONDS = 5.0

_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def routes() -> list:
    """The health route."""
    return [Route(PATH, healthz, methods=["GET", "HEAD"])]


async def database_check(path) -> str:
    """``"ok"`` when the archive answers a read in time, else ``"failed"``."""
    try:
        # A thread, so that a disk that hangs holds up this check, not the loop.
        await asyncio.wait_for(asyncio.to_thread(ping, path, timeout=DATABASE_TIMEOUT), DATABASE_TIMEOUT + 1)
    except (StorageError, asyncio.TimeoutError, OSError):
        return "failed"
    return "ok"


async def healthz(request: Request) -> JSONResponse:
    """200 when the database answers, the listener serves, the writer moves and the pipeline runs; 503 naming what does not."""
    state = request.app.state
    checks = {
        "database": await database_check(state.config.storage.database),
        "listener": "ok" if state.listening() else "not serving",
        "writer": "ok" if state.writer.busy_seconds() < WRITER_STUCK_SECONDS else "stuck",
        "pipeline": state.pipeline_state(),
    }
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "unhealthy", "checks": checks},
        status_code=200 if healthy else 503, headers=_HEADERS,
    )
