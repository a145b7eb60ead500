"""Serving the web app with uvicorn on the service's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from mailer.config import ConfigError

log = logging.getLogger("mailer.web")


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``mailer serve`` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class WebServer:
    """Service component: the web desk and public pages on ``[web] host:port``."""

    def __init__(self, app, host: str, port: int, *, trusted_proxies: str = "") -> None:
        # log_config=None: uvicorn's own logging setup would give its loggers
        # their own handlers and format; without it their lines reach ours
        # (mailer/logs.py). The access log stays off: public URLs carry tokens.
        # uvicorn believes X-Forwarded-For from loopback unless told otherwise,
        # which would let anyone on the machine (or behind a careless proxy)
        # pick the client address the login limiter counts: forwarded headers
        # count only from the proxies the columnist named.
        proxies = [p.strip() for p in trusted_proxies.split(",") if p.strip()]
        self.server = _QuietServer(uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off",
            access_log=False, server_header=False, log_config=None,
            proxy_headers=bool(proxies), forwarded_allow_ips=proxies or [],
        ))
        self._task: asyncio.Task | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked)."""
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Start serving; raise if the port cannot be bound."""
        self._task = asyncio.create_task(self._serve(), name="web")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the reason it stopped
                raise ConfigError("web.host/web.port: the web server stopped during startup")
            await asyncio.sleep(0.01)  # uvicorn offers no startup event to await
        log.info("web desk on http://%s:%d", self.server.config.host, self.port)

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit:
            # uvicorn logs a bind error and calls sys.exit(), which asyncio would
            # let escape the whole event loop; turn it into an error of this task.
            raise ConfigError(
                f"web.host/web.port: cannot listen on {self.server.config.host}:{self.server.config.port} "
                "(see the error logged just before)"
            ) from None

    async def stop(self) -> None:
        """Finish open requests and stop."""
        self.server.should_exit = True
        if self._task is not None:
            await self._task
