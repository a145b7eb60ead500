"""``mailer serve``: the listener and its workers on one asyncio loop.

Start order follows the data: the archive writer first (nothing may be
accepted that cannot be stored), then the background workers, then the SMTP
port. Stop order is the reverse: stop accepting, let letters in flight be
committed, stop the workers, close the database.

The pipeline (filing and answering letters) runs in a worker process of its
own (``app/pipeline_process.py``) when ``[pipeline] worker = "process"`` and
the service keeps the system's time; otherwise on this loop, as the rest.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Callable, Protocol
from urllib.parse import urlsplit

from mailer.app.pipeline_process import PipelineProcess
from mailer.clock import Clock, system_clock
from mailer.config import Config, ConfigError
from mailer.inbound import acknowledgements
from mailer.inbound.handling import Handler, PipelineContext, Preparer
from mailer.inbound.listener import LetterHandler, start_listener
from mailer.inbound.pipeline import Pipeline
from mailer.inbound.spf import SpfChecker
from mailer.newsletter import bounces, commands
from mailer.newsletter.scheduler import DigestScheduler
from mailer.outbound.delivery import make_transport
from mailer.outbound.dkim import load_signer
from mailer.outbound.outbox import OutboxWorker
from mailer.outbound.templating import template_environment
from mailer.store.writer import DatabaseWriter
from mailer.tls import server_context

log = logging.getLogger("mailer.service")

#: How long a stopping service waits for letters that are being stored.
DRAIN_SECONDS = 30.0


class Component(Protocol):
    """A background part of the service (outbox worker, scheduler, web desk)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ServiceLetterHandler(LetterHandler):
    """The listener's handler, saying when a session opens or closes (for a pipeline worker process)."""

    #: Called after a session was admitted or released; None when nobody asks.
    on_sessions_changed: Callable[[], None] | None = None

    def admit(self, protocol, client: str) -> str | None:
        """As LetterHandler.admit, then tell whoever asked that a session opened."""
        refusal = super().admit(protocol, client)
        if refusal is None and self.on_sessions_changed is not None:
            self.on_sessions_changed()
        return refusal

    def release(self, protocol) -> None:
        """As LetterHandler.release, then tell whoever asked that a session closed."""
        super().release(protocol)
        if self.on_sessions_changed is not None:
            self.on_sessions_changed()


class Service:
    """Everything ``mailer serve`` runs, startable and stoppable in-process."""

    def __init__(self, config: Config, *, clock: Clock = system_clock) -> None:
        self.config = config
        self.clock = clock
        self.writer = DatabaseWriter(config.storage.database)
        self.components: list[Component] = []
        self.handler: LetterHandler | None = None
        self.outbox = None  # set by build_components
        self.pipeline = None
        self.web = None
        self.scheduler = None  # set by build_components
        self.signer = None  # set by start (DKIM)
        self._server: asyncio.AbstractServer | None = None
        self._stopped = asyncio.Event()

    @property
    def smtp_address(self) -> tuple[str, int]:
        """The (host, port) the listener is bound to (useful when port 0 was asked)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]

    def pipeline_state(self) -> str:
        """For ``/healthz``: ``"ok"``, or ``"restarting"`` while the pipeline worker is dead."""
        if isinstance(self.pipeline, PipelineProcess) and self.pipeline.pid is None:
            return "restarting"
        return "ok"

    @property
    def listening(self) -> bool:
        """Whether the SMTP listener is serving right now (for /healthz)."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        """Open the archive, start the workers, then open the SMTP port."""
        # A bad certificate or key is a ConfigError naming smtp.tls_cert/
        # smtp.tls_key, raised before anything starts (nothing to undo).
        tls_context = server_context(self.config.smtp)
        # The DKIM key is read once, here; a missing or bad one is a
        # ConfigError naming dkim.key_file, before anything starts.
        self.signer = load_signer(self.config, clock=self.clock)
        warn_about_public_url(self.config.web.public_url)
        self.writer.start()
        started: list[Component] = []
        try:
            self.components = build_components(self)
            for component in self.components:
                await component.start()
                started.append(component)
            self.handler = ServiceLetterHandler(
                self.config, self.writer, clock=self.clock, on_stored=self._on_stored
            )
            if self.pipeline is not None:
                handler = self.handler
                self.pipeline.listener_busy = lambda: bool(handler.sessions)
                # A worker process cannot look at the sessions: it is told when they change.
                handler.on_sessions_changed = getattr(self.pipeline, "listener_changed", None)
            try:
                self._server = await start_listener(self.config, self.handler, tls_context)
            except OSError as exc:
                raise ConfigError(
                    f"smtp.host/smtp.port: cannot listen on {self.config.smtp.host}:{self.config.smtp.port}: "
                    f"{exc.strerror or exc}"
                ) from None
        except BaseException:
            # Undo what did start, so a failed start leaves no thread or port behind.
            await self._stop_workers(started)
            self.components = []
            raise
        host, port = self.smtp_address
        log.info("listening for SMTP on %s:%d (database %s)", host, port, self.config.storage.database,
                 extra={"event": "service_started", "smtp": f"{host}:{port}"})

    def _on_stored(self, stored) -> None:
        for component in self.components:
            notify = getattr(component, "message_stored", None)
            if notify is not None:
                notify(stored)

    async def stop_listener(self) -> None:
        """Stop accepting mail and finish letters in flight; the workers keep running."""
        if self._server is not None:
            self._server.close()
            assert self.handler is not None
            if not await self.handler.drain(DRAIN_SECONDS):
                log.warning("stopping with %d message(s) still being stored", self.handler.in_flight)
            self.handler.close_idle_sessions()
            self._server = None

    async def stop(self) -> None:
        """Stop accepting, finish letters in flight, stop workers, close the database."""
        # The listener goes first, so /healthz answers 503 while the rest winds down.
        await self.stop_listener()
        await self._stop_workers(self.components)
        self._stopped.set()
        log.info("stopped cleanly", extra={"event": "service_stopped"})

    async def _stop_workers(self, components: list[Component]) -> None:
        """Stop ``components`` in reverse start order, then the archive writer."""
        for component in reversed(components):
            try:
                await component.stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("error while stopping %s", type(component).__name__)
        await asyncio.get_running_loop().run_in_executor(None, self.writer.stop)

    async def run_until_signalled(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("signal received: shutting down")
        finally:
            await self.stop()


def warn_about_public_url(public_url: str) -> None:
    """Say so at startup when readers' unsubscribe links would not be one-click.

    RFC 8058 one-click needs an https List-Unsubscribe URL, and Gmail and
    Yahoo require one-click of bulk senders. A loopback URL is a developer's
    machine (the embedded default), where this does not matter.
    """
    url = urlsplit(public_url)
    if url.scheme != "https" and (url.hostname or "") not in ("127.0.0.1", "::1", "localhost"):
        log.warning("web.public_url %s is not https: mail providers ignore a one-click unsubscribe "
                    "link that is not https (RFC 8058); serve the public pages over https", public_url,
                    extra={"event": "config_warning", "key": "web.public_url"})


def message_handlers() -> dict[str, Handler]:
    """The pipeline's handler for each kind of inbound message (by the address it came to)."""
    return {
        "letter": acknowledgements.handle_letter,
        "subscribe": commands.handle_subscribe,
        "unsubscribe": commands.handle_unsubscribe,
        "bounce": bounces.handle_bounce,
    }


def message_preparers() -> dict[str, Preparer]:
    """What may be computed for each kind of message before its write transaction (``inbound/handling``)."""
    return {"letter": acknowledgements.prepare_letter}


def sender_check(config: Config) -> SpfChecker | None:
    """The SPF checker for letters, or None when it is off or a front MTA checked already."""
    if not config.spf.enabled or config.smtp.trusted_relay:
        return None
    return SpfChecker(config.spf)


def runs_worker_process(config: Config, clock: Clock) -> bool:
    """Whether the pipeline runs in a worker process (``pipeline.worker``) rather than in-process.

    The worker process keeps the time by the system clock; a service given
    another clock (a test's fixed one) runs the pipeline in-process, on it.
    """
    return config.pipeline.worker == "process" and clock is system_clock


def build_components(service: Service) -> list[Component]:
    """The background parts of the service, in start order."""
    config = service.config
    templates = template_environment(config.templates_override())
    outbox = OutboxWorker(
        config.delivery, service.writer, make_transport(config.delivery), clock=service.clock,
        signer=service.signer,
    )
    pipeline: Pipeline | PipelineProcess
    if runs_worker_process(config, service.clock):
        pipeline = PipelineProcess(config, on_processed=outbox.wake)
    else:
        pipeline = Pipeline(
            service.writer,
            PipelineContext(config=config, templates=templates, clock=service.clock),
            handlers=message_handlers(),
            preparers=message_preparers(),
            on_processed=outbox.wake,
            sender_check=sender_check(config),
        )
    service.outbox = outbox
    service.pipeline = pipeline
    components: list[Component] = [outbox, pipeline]
    # The weekly digest runs on the schedules in schedules/*.toml.
    service.scheduler = DigestScheduler(config, clock=service.clock, signer=service.signer)
    components.append(service.scheduler)
    if config.web.enabled:
        from mailer.web import create_app
        from mailer.web.server import WebServer

        service.web = WebServer(
            create_app(config, writer=service.writer, clock=service.clock, on_enqueued=outbox.wake,
                       listening=lambda: service.listening, pipeline_state=service.pipeline_state),
            config.web.host, config.web.port, trusted_proxies=config.web.trusted_proxies,
        )
        components.append(service.web)
    return components
